#!/usr/bin/env Rscript
# Time lme4::lmer (or lme4::glmer) on one CSV; print one JSON object on the last
# line of stdout.
#
# Usage: Rscript lme4_bench.R CSV METADATA_JSON DATASET FORMULA REML REPS [FAMILY [NAGQ]]
#   CSV            the data (a bundled file from src/mixedmodels/datasets/data/,
#                  or a simulated one from benchmarks/.cache/)
#   METADATA_JSON  src/mixedmodels/datasets/data/metadata.json (factor levels,
#                  in R's order; read with jsonlite when installed, otherwise
#                  factor columns get as.factor's sorted levels), or "-" for a
#                  simulated CSV: then it is read with data.table::fread when
#                  installed (read.csv otherwise) and lme4 turns the integer
#                  grouping columns into factors itself
#   REML           TRUE or FALSE
#   REPS           number of timed fits; the reported time is their median
#   FAMILY         optional: a GLM family name (e.g. binomial); then the model is
#                  fitted by glmer(FORMULA, family = FAMILY, nAGQ = NAGQ) with the
#                  default glmerControl, REML is ignored, the objective is
#                  -2 * logLik(fit) and "evaluations" is fit@optinfo$feval, which
#                  counts stage 2 only (the joint (theta, beta) optimisation);
#                  stage 1 (nAGQ = 0, theta only) is not kept in the fit, so it is
#                  read from lme4's internal optimizeGlmer by trace() (two calls
#                  per fit, no measurable cost) and reported as
#                  "evaluations_stage1" (null if that fails)
#   NAGQ           optional, default 1 (Laplace)
#
# Every timed fit is system.time(lmer(...))["elapsed"] (or glmer), data already
# in memory (the same as the Python side, which times lmer() / glmer() on a
# loaded DataFrame).
# Memory: "r_heap_max_mb" is R's own heap high-water mark during the timed fits
# (gc(reset = TRUE) before them, the "max used" column of gc() after), and
# "r_heap_base_mb" the heap in use before them (data loaded).  It misses memory
# malloc'ed outside R's heap (Eigen/CHOLMOD in lme4's C++); the process peak RSS
# is measured by the caller with /usr/bin/time.
suppressPackageStartupMessages(library(lme4))

args <- commandArgs(trailingOnly = TRUE)
if (!(length(args) %in% 6:8)) {
  stop("usage: lme4_bench.R CSV METADATA_JSON DATASET FORMULA REML REPS [FAMILY [NAGQ]]")
}
csv <- args[1]; meta_path <- args[2]; dataset <- args[3]
form <- as.formula(args[4]); reml <- as.logical(args[5]); reps <- as.integer(args[6])
family_name <- if (length(args) >= 7 && args[7] != "-") args[7] else NULL
nagq <- if (length(args) >= 8) as.integer(args[8]) else 1L
is_glmer <- !is.null(family_name)

factors <- NULL
if (meta_path != "-" && requireNamespace("jsonlite", quietly = TRUE)) {
  meta <- jsonlite::fromJSON(meta_path, simplifyVector = FALSE)
  factors <- meta[[dataset]]$factors
}
if (meta_path == "-") {
  if (requireNamespace("data.table", quietly = TRUE)) {
    dat <- as.data.frame(data.table::fread(csv, showProgress = FALSE))
    level_source <- "fread"
  } else {
    dat <- read.csv(csv)
    level_source <- "read.csv"
  }
} else if (is.null(factors)) {
  dat <- read.csv(csv, stringsAsFactors = TRUE)
  level_source <- "as.factor"
} else {
  dat <- read.csv(csv, colClasses = setNames(rep("character", length(factors)), names(factors)))
  for (col in names(factors)) {
    spec <- factors[[col]]
    dat[[col]] <- factor(dat[[col]], levels = unlist(spec$levels), ordered = isTRUE(spec$ordered))
  }
  level_source <- "metadata.json"
}

# warm-up on a small problem so that lazy loading is not timed
invisible(lmer(Reaction ~ Days + (Days | Subject), sleepstudy))
stage1 <- new.env()
if (is_glmer) {
  fam <- get(family_name, mode = "function")()
  fit_once <- function() glmer(form, dat, family = fam, nAGQ = nagq)
  # count stage 1's evaluations: optimizeGlmer(stage = 1) returns optwrap's result
  tryCatch(
    suppressMessages(trace("optimizeGlmer", where = asNamespace("lme4"), print = FALSE,
      exit = bquote(if (stage == 1) assign("feval", returnValue()$feval, envir = .(stage1))))),
    error = function(e) NULL)
  invisible(glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, family = binomial))
  if (exists("feval", envir = stage1, inherits = FALSE)) rm("feval", envir = stage1)
} else {
  fit_once <- function() lmer(form, dat, REML = reml)
}

heap_mb <- function(g, col) sum(g[, col])
g0 <- gc(reset = TRUE)
base_mb <- heap_mb(g0, 2)
times <- numeric(reps)
fit <- NULL
warns <- character(0)
for (i in seq_len(reps)) {
  times[i] <- system.time(fit <- withCallingHandlers(
    fit_once(),
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") }
  ))[["elapsed"]]
}
g1 <- gc()
max_mb <- heap_mb(g1, 6)
objective <- if (is_glmer) -2 * as.numeric(logLik(fit)) else if (reml) REMLcrit(fit) else deviance(fit)
feval1 <- if (is_glmer && !is.null(stage1$feval)) sprintf("%d", as.integer(stage1$feval)) else "null"
glmer_json <- if (is_glmer) {
  sprintf('"family": "%s", "nagq": %d, "evaluations_stage1": %s, "theta": [%s], ',
          family_name, nagq, feval1, paste(sprintf("%.12g", getME(fit, "theta")), collapse = ", "))
} else ""
fe <- fixef(fit)
conv_msgs <- c(unique(warns), fit@optinfo$conv$lme4$messages)
esc <- function(s) gsub('"', "'", gsub("\\\\", "/", gsub("[\r\n]+", " ", s)))
cat(sprintf(paste0(
  '{"time": %.6f, "times": [%s], "evaluations": %d, "objective": %.10f, ',
  '"optimizer": "%s", "lme4_version": "%s", "r_version": "%s", "levels": "%s", ',
  '"r_heap_base_mb": %.1f, "r_heap_max_mb": %.1f, "singular": %s, "messages": [%s], ',
  '%s"fixef": {%s}}\n'),
  median(times), paste(sprintf("%.6f", times), collapse = ", "),
  as.integer(fit@optinfo$feval), objective,
  if (is_glmer) paste0(glmerControl()$optimizer[1], " (nAGQ = 0), then ", fit@optinfo$optimizer)
  else fit@optinfo$optimizer,
  as.character(packageVersion("lme4")), paste(R.version$major, R.version$minor, sep = "."),
  level_source, base_mb, max_mb, if (isSingular(fit)) "true" else "false",
  paste(sprintf('"%s"', esc(unique(conv_msgs))), collapse = ", "), glmer_json,
  paste(sprintf('"%s": %.12g', names(fe), fe), collapse = ", ")))
