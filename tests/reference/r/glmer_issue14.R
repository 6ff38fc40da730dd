# R numbers used by tests/test_glmer_start.py (issue 14): lme4's glmer on cbpp
# with glmerControl(nAGQ0initStep = FALSE), the nAGQ = 0 stage skipped.
# Run: Rscript tests/reference/r/glmer_issue14.R   (needs lme4; CI never runs it)
suppressMessages(library(lme4))
cat("# R", R.version$major, ".", R.version$minor, ", lme4 ", as.character(packageVersion("lme4")), "\n", sep = "")
f <- cbind(incidence, size - incidence) ~ period + (1 | herd)
m <- glmer(f, data = cbpp, family = binomial,
           control = glmerControl(nAGQ0initStep = FALSE))
cat("deviance (-2 logLik):", sprintf("%.15g", -2 * as.numeric(logLik(m))), "\n")
cat("theta:", sprintf("%.15g", getME(m, "theta")), "\n")
cat("fixef:", sprintf("%.15g", fixef(m)), "\n")
cat("se:", sprintf("%.15g", sqrt(diag(as.matrix(vcov(m))))), "\n")
cat("evaluations:", m@optinfo$feval, "\n")
