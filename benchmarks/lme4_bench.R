#!/usr/bin/env Rscript
# Time lme4::lmer on one of mixedmodels' bundled CSVs; print one JSON object.
#
# Usage: Rscript lme4_bench.R CSV METADATA_JSON DATASET FORMULA REML REPS
#   CSV            src/mixedmodels/datasets/data/<DATASET>.csv
#   METADATA_JSON  src/mixedmodels/datasets/data/metadata.json (factor levels,
#                  in R's order; read with jsonlite when installed, otherwise
#                  factor columns get as.factor's sorted levels)
#   REML           TRUE or FALSE
#   REPS           number of timed fits; the reported time is their median
#
# Every timed fit is system.time(lmer(...))["elapsed"], data already in memory
# (the same as the Python side, which times lmer() on a loaded DataFrame).
suppressPackageStartupMessages(library(lme4))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 6) stop("usage: lme4_bench.R CSV METADATA_JSON DATASET FORMULA REML REPS")
csv <- args[1]; meta_path <- args[2]; dataset <- args[3]
form <- as.formula(args[4]); reml <- as.logical(args[5]); reps <- as.integer(args[6])

factors <- NULL
if (requireNamespace("jsonlite", quietly = TRUE)) {
  meta <- jsonlite::fromJSON(meta_path, simplifyVector = FALSE)
  factors <- meta[[dataset]]$factors
}
if (is.null(factors)) {
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

times <- numeric(reps)
fit <- NULL
for (i in seq_len(reps)) {
  times[i] <- system.time(fit <- lmer(form, dat, REML = reml))[["elapsed"]]
}
objective <- if (reml) REMLcrit(fit) else deviance(fit)
fe <- fixef(fit)
cat(sprintf(paste0(
  '{"time": %.6f, "times": [%s], "evaluations": %d, "objective": %.10f, ',
  '"optimizer": "%s", "lme4_version": "%s", "r_version": "%s", "levels": "%s", ',
  '"fixef": {%s}}\n'),
  median(times), paste(sprintf("%.6f", times), collapse = ", "),
  as.integer(fit@optinfo$feval), objective, fit@optinfo$optimizer,
  as.character(packageVersion("lme4")), paste(R.version$major, R.version$minor, sep = "."),
  level_source,
  paste(sprintf('"%s": %.12g', names(fe), fe), collapse = ", ")))
