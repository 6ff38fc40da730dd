# Regenerate the R reference results the tests read (tests/reference/cases/*.json).
#
# Usage (from the repository root; needs R with lme4, lmerTest, pbkrtest,
# performance, RLRsim and jsonlite; CI never runs this):
#
#     Rscript tests/reference/make.R            # every case in MANIFEST below
#     Rscript tests/reference/make.R lmer_dyestuff glmer_cbpp_laplace
#
# Each case is refitted from its `data_prep` and `call` and the core fields of
# the schema (see tests/reference/README.md) are written again; fields that
# need a package-specific extra (satterthwaite, kenward_roger, profile_ci, ...)
# are recomputed where this script knows how and otherwise kept from the
# existing file, so a refresh never silently drops a field a test reads.
# The numbers in the committed files were produced by lme4 1.1-31 on
# R 4.2.2 with OpenBLAS (see each file's `package` field).

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

MANIFEST <- c(
  "lmer_sleepstudy_reml", "lmer_sleepstudy_ml", "lmer_sleepstudy_zerocorr",
  "lmer_sleepstudy_diagnostics", "lmer_dyestuff", "lmer_dyestuff2_singular",
  "lmer_penicillin", "lmer_pastes_nested", "lmer_insteval_ml",
  "glmer_cbpp_laplace", "glmer_cbpp_agq25", "glmer_cbpp_presentation",
  "glmer_grouseticks_poisson", "glmer_grouseticks_overdisp", "glmer_verbagg",
  "gls_orthodont_varident", "gls_ovary_arma11", "gls_spatial_gaus"
)

here <- function() {
  args <- commandArgs(trailingOnly = FALSE)
  file <- sub("^--file=", "", args[grep("^--file=", args)])
  if (length(file)) dirname(normalizePath(file)) else "tests/reference"
}

named <- function(x) as.list(setNames(as.numeric(x), names(x)))

varcorr_rows <- function(fit) {
  vc <- as.data.frame(VarCorr(fit))
  lapply(seq_len(nrow(vc)), function(i) list(
    grp = vc$grp[i],
    var1 = if (is.na(vc$var1[i])) NULL else vc$var1[i],
    var2 = if (is.na(vc$var2[i])) NULL else vc$var2[i],
    vcov = vc$vcov[i], sdcor = vc$sdcor[i]
  ))
}

ranef_tables <- function(fit) {
  re <- ranef(fit, condVar = TRUE)
  modes <- list(); sds <- list()
  for (g in names(re)) {
    tab <- re[[g]]
    pv <- attr(tab, "postVar")  # k x k x levels; a list of them for (x || g)
    if (!is.list(pv)) pv <- list(pv)
    sd <- do.call(cbind, lapply(pv, function(a) {
      t(matrix(apply(a, 3, function(m) sqrt(diag(as.matrix(m)))), nrow = dim(a)[1]))
    }))
    modes[[g]] <- list(columns = I(colnames(tab)), levels = I(rownames(tab)),
                       values = unname(as.matrix(tab)))
    sds[[g]] <- list(columns = I(colnames(tab)), levels = I(rownames(tab)),
                     values = unname(matrix(sd, nrow = nrow(tab))))
  }
  list(ranef = modes, ranef_condsd = sds)
}

core_fields <- function(fit) {
  glmm <- isGLMM(fit)
  ll <- logLik(fit)
  v <- as.matrix(vcov(fit))
  out <- list(
    formula = paste(deparse(formula(fit), width.cutoff = 500L), collapse = " "),
    family = family(fit)$family, link = family(fit)$link,
    nobs = nobs(fit), ngroups = as.list(ngrps(fit)),
    fixef = named(fixef(fit)), se = named(sqrt(diag(v))),
    vcov = list(names = I(colnames(v)), matrix = unname(v)),
    varcorr = varcorr_rows(fit), sigma = sigma(fit),
    theta = named(getME(fit, "theta")),
    loglik = as.numeric(ll), df = attr(ll, "df"),
    aic = AIC(fit), bic = BIC(fit),
    singular = isSingular(fit),
    fitted_head = unname(head(fitted(fit), 20)),
    residuals_head = unname(head(residuals(fit, type = "response"), 20))
  )
  if (!glmm && isREML(fit)) {
    out$reml_criterion <- REMLcrit(fit)
  } else {
    out$deviance <- -2 * as.numeric(ll)
  }
  if (glmm) out$deviance_conditional <- deviance(fit)
  c(out, ranef_tables(fit))
}

predict_fields <- function(fit, rows) {
  nd <- as.data.frame(do.call(rbind, lapply(rows, as.data.frame)))
  for (col in names(nd)) {
    f <- model.frame(fit)[[col]]
    if (is.factor(f)) nd[[col]] <- factor(nd[[col]], levels = union(levels(f), "NEW"))
  }
  out <- list(rows = rows,
              re_form_NA = unname(predict(fit, nd, re.form = NA)),
              with_re = unname(predict(fit, nd, allow.new.levels = TRUE)))
  if (isGLMM(fit)) {
    out$re_form_NA_response <- unname(predict(fit, nd, re.form = NA, type = "response"))
    out$with_re_response <- unname(predict(fit, nd, allow.new.levels = TRUE, type = "response"))
  }
  out
}

refresh <- function(id, dir) {
  if (startsWith(id, "gls_")) {
    # nlme cases: copied from the shared reference folder (sync.py); this
    # script only knows how to refit lme4 models
    cat("kept", id, "(nlme case, not refitted here)\n")
    return(invisible(NULL))
  }
  path <- file.path(dir, "cases", paste0(id, ".json"))
  case <- fromJSON(path, simplifyVector = FALSE)
  env <- new.env()
  eval(parse(text = case$data_prep), envir = env)
  fit <- eval(parse(text = case$call), envir = env)
  fresh <- core_fields(fit)
  if (!is.null(case$predict_newdata)) {
    pred <- predict_fields(fit, case$predict_newdata$rows)
    for (k in names(pred)) case$predict_newdata[[k]] <- pred[[k]]  # keeps its other fields
  }
  for (k in names(fresh)) case[[k]] <- fresh[[k]]
  # `package` keeps every package the case's extras came from; say when lme4 differs
  have <- as.character(packageVersion("lme4"))
  if (!grepl(paste("lme4", have), chartr("-", ".", case$package), fixed = TRUE)) {
    warning(id, ": lme4 ", have, " is not the case's (", case$package, ")")
  }
  writeLines(toJSON(case, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null", null = "null"),
             path)
  cat("refreshed", id, "\n")
}

ids <- commandArgs(trailingOnly = TRUE)
if (!length(ids)) ids <- MANIFEST
for (id in ids) refresh(id, here())
