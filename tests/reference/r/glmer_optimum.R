# Reference numbers for tests/test_glmer_optimum.py (issue 14: glmer's default
# stopping on a raised plateau of the deviance left by PIRLS's tolerance).
#
# Data: tests/reference/data/glmer_plateau_{lower,edge}.csv, simulated logistic
# designs of mlmRev's Contraception shape (use ~ age + age^2 + urban + livch, a
# random intercept per district: 1715 rows / 35 districts / SD 1.9, and 1539 rows /
# 86 districts / SD 1.6; made in Python with numpy's default_rng, ages rounded to
# 0.01, and stored as CSV so that they do not depend on numpy's random streams).
#
# Run from the repository root:  Rscript tests/reference/r/glmer_optimum.R
# Produced with R 4.2.2, lme4 1.1-31 (Debian bookworm packages).
suppressMessages(library(lme4))
cat("lme4", as.character(packageVersion("lme4")), "\n")
show <- function(m) {
  cat("  deviance (-2 logLik):", sprintf("%.10f", -2 * as.numeric(logLik(m))), "\n")
  cat("  theta:", sprintf("%.12g", getME(m, "theta")), "\n")
  cat("  fixef:", sprintf("%.12g", fixef(m)), "\n")
  cat("  se:", sprintf("%.8g", sqrt(diag(as.matrix(vcov(m))))), "\n")
  cat("  convergence:", paste(m@optinfo$conv$lme4$messages, collapse = " | "), "\n")
}
for (name in c("glmer_plateau_lower", "glmer_plateau_edge")) {
  d <- read.csv(file.path("tests/reference/data", paste0(name, ".csv")))
  d$livch <- factor(d$livch); d$urban <- factor(d$urban); d$district <- factor(d$district)
  f <- use ~ age + I(age^2) + urban + livch + (1 | district)
  cat(name, "default: glmer(f, d, family = binomial)\n")
  show(suppressWarnings(glmer(f, d, family = binomial)))
  cat(name, "tight: glmer(f, d, family = binomial, control = glmerControl(tolPwrss = 1e-12))\n")
  show(suppressWarnings(glmer(f, d, family = binomial, control = glmerControl(tolPwrss = 1e-12))))
}
