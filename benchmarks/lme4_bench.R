#!/usr/bin/env Rscript
# Time lme4::lmer on one CSV; print one JSON object on the last line of stdout.
#
# Usage: Rscript lme4_bench.R CSV METADATA_JSON DATASET FORMULA REML REPS
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
#
# Every timed fit is system.time(lmer(...))["elapsed"], data already in memory
# (the same as the Python side, which times lmer() on a loaded DataFrame).
# Memory: "r_heap_max_mb" is R's own heap high-water mark during the timed fits
# (gc(reset = TRUE) before them, the "max used" column of gc() after), and
# "r_heap_base_mb" the heap in use before them (data loaded).  It misses memory
# malloc'ed outside R's heap (Eigen/CHOLMOD in lme4's C++); the process peak RSS
# is measured by the caller with /usr/bin/time.
suppressPackageStartupMessages(library(lme4))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 6) stop("usage: lme4_bench.R CSV METADATA_JSON DATASET FORMULA REML REPS")
csv <- args[1]; meta_path <- args[2]; dataset <- args[3]
form <- as.formula(args[4]); reml <- as.logical(args[5]); reps <- as.integer(args[6])

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

heap_mb <- function(g, col) sum(g[, col])
g0 <- gc(reset = TRUE)
base_mb <- heap_mb(g0, 2)
times <- numeric(reps)
fit <- NULL
warns <- character(0)
for (i in seq_len(reps)) {
  times[i] <- system.time(fit <- withCallingHandlers(
    lmer(form, dat, REML = reml),
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") }
  ))[["elapsed"]]
}
g1 <- gc()
max_mb <- heap_mb(g1, 6)
objective <- if (reml) REMLcrit(fit) else deviance(fit)
fe <- fixef(fit)
conv_msgs <- c(unique(warns), fit@optinfo$conv$lme4$messages)
esc <- function(s) gsub('"', "'", gsub("\\\\", "/", gsub("[\r\n]+", " ", s)))
cat(sprintf(paste0(
  '{"time": %.6f, "times": [%s], "evaluations": %d, "objective": %.10f, ',
  '"optimizer": "%s", "lme4_version": "%s", "r_version": "%s", "levels": "%s", ',
  '"r_heap_base_mb": %.1f, "r_heap_max_mb": %.1f, "singular": %s, "messages": [%s], ',
  '"fixef": {%s}}\n'),
  median(times), paste(sprintf("%.6f", times), collapse = ", "),
  as.integer(fit@optinfo$feval), objective, fit@optinfo$optimizer,
  as.character(packageVersion("lme4")), paste(R.version$major, R.version$minor, sep = "."),
  level_source, base_mb, max_mb, if (isSingular(fit)) "true" else "false",
  paste(sprintf('"%s"', esc(unique(conv_msgs))), collapse = ", "),
  paste(sprintf('"%s": %.12g', names(fe), fe), collapse = ", ")))
