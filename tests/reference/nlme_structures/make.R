# Reference numbers of nlme's residual correlation structures (corStruct).
#
# Regenerate (R >= 4.2, nlme 3.1-162, jsonlite), from the repository root:
#   Rscript tests/reference/nlme_structures/make.R
# writes tests/reference/nlme_structures/correlation.json, read by
# tests/test_residual_correlation.py (the tests never run R).
# (make_variance.R beside it writes variance.json, the variance functions' references.)
#
# Each case builds one corStruct, Initialize()s it on a data set, and stores
#   class, args       the Python constructor's arguments (value, p, q, nugget, metric)
#   positions         per group (in nlme's group order), what the Python class takes:
#                     0-based order index (corCompSymm, corAR1, corARMA, corSymm),
#                     times (corCAR1), coordinates as rows (spatial)
#   unconstrained     coef(cs, unconstrained = TRUE)
#   natural           coef(cs, unconstrained = FALSE)
#   matrices          corMatrix(cs) of the first two groups (row-major lists)
#   arma_acf          (corARMA cases) stats::ARMAacf at lags 0..9: the process's true
#                     autocorrelations, which nlme 3.1-162's corMatrix departs from at
#                     lags p+1..q when q > p >= 1 (its ARMA_corr reads theta_j at pars[j-1])
suppressMessages({library(nlme); library(jsonlite)})
out_dir <- if (file.exists("tests/reference/nlme_structures")) "tests/reference/nlme_structures" else "."

set.seed(16)
# unbalanced groups with integer times that have gaps (visits 1..5, some missing)
visits <- data.frame(g = factor(rep(c("a", "b", "c", "d"), c(3, 5, 2, 4))),
                     v = c(1, 2, 4,  1, 2, 3, 4, 5,  2, 5,  1, 3, 4, 5))
# irregular continuous times
ctime <- data.frame(g = factor(rep(c("p", "q", "r"), c(4, 3, 5))),
                    t = c(0, 0.5, 1.7, 3.1,  0.2, 1.0, 4.4,  0, 0.3, 0.9, 1.6, 2.8))
# 2-D coordinates without ties, one group and two groups
coords <- data.frame(x = c(0, 1, 0, 2, 1.5, 3.2, 0.7, 2.6),
                     y = c(0, 0, 1, 3, 0.4, 1.1, 2.2, 2.0),
                     g = factor(rep(c("s1", "s2"), c(5, 3))))

order_positions <- function(groups) lapply(split(seq_along(groups), groups), function(i) seq_along(i) - 1)
value_positions <- function(x, groups, shift = 0) lapply(split(x - shift, groups), unname)
coord_positions <- function(d, groups) {
  lapply(split(seq_len(nrow(d)), groups), function(i) unname(lapply(i, function(k) c(d$x[k], d$y[k]))))
}

cases <- list()
add <- function(name, cls, args, cs, data, positions) {
  cs <- Initialize(cs, data)
  mats <- corMatrix(cs)
  if (!is.list(mats)) mats <- list(mats)
  mats <- lapply(mats[seq_len(min(2, length(mats)))], function(m) unname(lapply(seq_len(nrow(m)), function(r) m[r, ])))
  cases[[name]] <<- list(class = cls, args = args, positions = unname(positions),
                        unconstrained = unname(as.vector(coef(cs, unconstrained = TRUE))),
                        natural = unname(as.vector(coef(cs, unconstrained = FALSE))),
                        matrices = unname(mats))
  if (cls == "corARMA") {
    coefs <- coef(cs, unconstrained = FALSE)
    p <- args$p; q <- args$q
    cases[[name]]$arma_acf <<- unname(as.vector(ARMAacf(ar = coefs[seq_len(p)], ma = coefs[p + seq_len(q)], lag.max = 9)))
  }
}

ort_pos <- order_positions(Orthodont$Subject)
add("compsymm_orthodont", "corCompSymm", list(value = 0.3), corCompSymm(0.3, form = ~ 1 | Subject), Orthodont, ort_pos)
add("compsymm_default", "corCompSymm", list(), corCompSymm(form = ~ 1 | Subject), Orthodont, ort_pos)
add("compsymm_negative_unbalanced", "corCompSymm", list(value = -0.2), corCompSymm(-0.2, form = ~ 1 | g), visits,
    order_positions(visits$g))
add("ar1_orthodont", "corAR1", list(value = 0.6), corAR1(0.6, form = ~ 1 | Subject), Orthodont, ort_pos)
add("ar1_default", "corAR1", list(), corAR1(form = ~ 1 | Subject), Orthodont, ort_pos)
add("ar1_gaps", "corAR1", list(value = -0.4), corAR1(-0.4, form = ~ v | g), visits, value_positions(visits$v, visits$g))
ova_pos <- order_positions(Ovary$Mare)
add("arma20_ovary", "corARMA", list(value = c(0.4, -0.2), p = 2, q = 0),
    corARMA(c(0.4, -0.2), form = ~ 1 | Mare, p = 2, q = 0), Ovary, ova_pos)
add("arma11_ovary", "corARMA", list(value = c(0.5, 0.3), p = 1, q = 1),
    corARMA(c(0.5, 0.3), form = ~ 1 | Mare, p = 1, q = 1), Ovary, ova_pos)
add("arma12_ovary", "corARMA", list(value = c(0.3, 0.2, -0.1), p = 1, q = 2),
    corARMA(c(0.3, 0.2, -0.1), form = ~ 1 | Mare, p = 1, q = 2), Ovary, ova_pos)
add("arma01_ovary", "corARMA", list(value = 0.4, p = 0, q = 1),
    corARMA(0.4, form = ~ 1 | Mare, p = 0, q = 1), Ovary, ova_pos)
add("arma32_gaps", "corARMA", list(value = c(0.2, 0.1, -0.15, 0.3, 0.25), p = 3, q = 2),
    corARMA(c(0.2, 0.1, -0.15, 0.3, 0.25), form = ~ v | g, p = 3, q = 2), visits, value_positions(visits$v, visits$g))
add("arma13_gaps", "corARMA", list(value = c(-0.35, 0.4, -0.3, 0.2), p = 1, q = 3),
    corARMA(c(-0.35, 0.4, -0.3, 0.2), form = ~ v | g, p = 1, q = 3), visits, value_positions(visits$v, visits$g))
add("arma02_default", "corARMA", list(p = 0, q = 2), corARMA(form = ~ 1 | Mare, p = 0, q = 2), Ovary, ova_pos)
add("car1_irregular", "corCAR1", list(value = 0.7), corCAR1(0.7, form = ~ t | g), ctime, value_positions(ctime$t, ctime$g))
add("car1_default", "corCAR1", list(), corCAR1(form = ~ t | g), ctime, value_positions(ctime$t, ctime$g))
add("symm_orthodont", "corSymm", list(value = c(0.5, 0.3, 0.2, 0.4, 0.25, 0.6)),
    corSymm(c(0.5, 0.3, 0.2, 0.4, 0.25, 0.6), form = ~ 1 | Subject), Orthodont, ort_pos)
add("symm_negative", "corSymm", list(value = c(-0.3, 0.1, 0.2, -0.25, 0.05, 0.4)),
    corSymm(c(-0.3, 0.1, 0.2, -0.25, 0.05, 0.4), form = ~ 1 | Subject), Orthodont, ort_pos)
add("symm_visits", "corSymm", list(value = c(0.5, 0.4, 0.3, 0.2, 0.5, 0.4, 0.3, 0.5, 0.4, 0.5)),
    corSymm(c(0.5, 0.4, 0.3, 0.2, 0.5, 0.4, 0.3, 0.5, 0.4, 0.5), form = ~ v | g), visits,
    value_positions(visits$v, visits$g, shift = 1))
add("symm_default", "corSymm", list(), corSymm(form = ~ v | g), visits, value_positions(visits$v, visits$g, shift = 1))

one <- factor(rep("all", nrow(coords)))
spatial <- list(corExp = corExp, corGaus = corGaus, corLin = corLin, corRatio = corRatio, corSpher = corSpher)
for (cls in names(spatial)) {
  make <- spatial[[cls]]
  add(paste0(cls, "_one"), cls, list(value = 1.5), make(1.5, form = ~ x + y), coords, coord_positions(coords, one))
  add(paste0(cls, "_default"), cls, list(), make(form = ~ x + y), coords, coord_positions(coords, one))
  add(paste0(cls, "_nugget_groups"), cls, list(value = c(2.5, 0.2), nugget = TRUE),
      make(c(2.5, 0.2), form = ~ x + y | g, nugget = TRUE), coords, coord_positions(coords, coords$g))
  add(paste0(cls, "_nugget_default"), cls, list(nugget = TRUE),
      make(form = ~ x + y, nugget = TRUE), coords, coord_positions(coords, one))
  add(paste0(cls, "_maximum"), cls, list(value = 1.8, metric = "maximum"),
      make(1.8, form = ~ x + y, metric = "maximum"), coords, coord_positions(coords, one))
  add(paste0(cls, "_manhattan"), cls, list(value = c(2.2, 0.3), nugget = TRUE, metric = "manhattan"),
      make(c(2.2, 0.3), form = ~ x + y, nugget = TRUE, metric = "manhattan"), coords, coord_positions(coords, one))
}

writeLines(toJSON(list(nlme = as.character(packageVersion("nlme")), cases = cases),
                  digits = NA, auto_unbox = FALSE, pretty = FALSE),
           file.path(out_dir, "correlation.json"))
