# Regenerates variance.json: nlme's variance functions (varFunc) on Orthodont.
#
#   cd tests/reference/nlme_structures && Rscript make_variance.R
#
# For each case, stores nlme's coef(Initialize(vf, Orthodont), unconstrained=TRUE)
# and unconstrained=FALSE (free parameters only, nlme's names), varWeights (1/sd
# multipliers, one per row) and logLik (sum(log(varWeights))). The data columns the
# Python tests need (age, Sex as character) are stored too, so tests never need R.
# Weights are read after coef(init) <- coef(init), which is how nlme computes
# them during a fit. R 4.2, nlme 3.1-162, jsonlite.
library(nlme)
library(jsonlite)
data(Orthodont, package = "nlme")
d <- as.data.frame(Orthodont)

cases <- list(
  varIdent_default = list(class = "varIdent", form = "~ 1 | Sex",
                          vf = varIdent(form = ~ 1 | Sex)),
  varIdent_female07 = list(class = "varIdent", form = "~ 1 | Sex", value = list(Female = 0.7),
                           vf = varIdent(c(Female = 0.7), form = ~ 1 | Sex)),
  varIdent_unnamed25 = list(class = "varIdent", form = "~ 1 | Sex", value = 2.5,
                            vf = varIdent(2.5, form = ~ 1 | Sex)),
  varIdent_fixed = list(class = "varIdent", form = "~ 1 | Sex", fixed = list(Female = 0.8),
                        vf = varIdent(form = ~ 1 | Sex, fixed = c(Female = 0.8))),
  varPower_default = list(class = "varPower", form = "~ age",
                          vf = varPower(form = ~ age)),
  varPower_06 = list(class = "varPower", form = "~ age", value = 0.6,
                     vf = varPower(0.6, form = ~ age)),
  varPower_neg = list(class = "varPower", form = "~ age", value = -1.3,
                      vf = varPower(-1.3, form = ~ age)),
  varPower_strata = list(class = "varPower", form = "~ age | Sex", value = 0.7,
                         vf = varPower(0.7, form = ~ age | Sex)),
  varPower_strata_fixed = list(class = "varPower", form = "~ age | Sex", value = 0.7,
                               fixed = list(Male = 0.3),
                               vf = varPower(0.7, form = ~ age | Sex, fixed = c(Male = 0.3))),
  varExp_01 = list(class = "varExp", form = "~ age", value = 0.1,
                   vf = varExp(0.1, form = ~ age)),
  varExp_neg = list(class = "varExp", form = "~ age", value = -0.05,
                    vf = varExp(-0.05, form = ~ age)),
  varConstPower_default = list(class = "varConstPower", form = "~ age",
                               vf = varConstPower(form = ~ age)),
  varConstPower_2_04 = list(class = "varConstPower", form = "~ age", const = 2, power = 0.4,
                            vf = varConstPower(const = 2, power = 0.4, form = ~ age)),
  varConstPower_fixed_const = list(class = "varConstPower", form = "~ age", power = 0.4,
                                   fixed = list(const = 3),
                                   vf = varConstPower(power = 0.4, form = ~ age,
                                                      fixed = list(const = 3))),
  varExp_strata = list(class = "varExp", form = "~ age | Sex", value = list(Male = 0.1, Female = -0.05),
                       vf = varExp(c(Male = 0.1, Female = -0.05), form = ~ age | Sex)),
  varConstPower_strata = list(class = "varConstPower", form = "~ age | Sex", const = 2, power = 0.4,
                              vf = varConstPower(const = 2, power = 0.4, form = ~ age | Sex)),
  varFixed_age = list(class = "varFixed", form = "~ age", vf = varFixed(~ age)),
  varComb_ident_power = list(class = "varComb",
                             components = list(
                               list(class = "varIdent", form = "~ 1 | Sex", value = list(Female = 0.7)),
                               list(class = "varPower", form = "~ age", value = 0.6)),
                             vf = varComb(varIdent(c(Female = 0.7), form = ~ 1 | Sex),
                                          varPower(0.6, form = ~ age)))
)

out <- list(
  nlme_version = as.character(packageVersion("nlme")),
  data = list(age = d$age, Sex = as.character(d$Sex)),
  cases = lapply(cases, function(case) {
    init <- Initialize(case$vf, d)
    # Initialize.varConstPower leaves the weights at 1 (nlme computes them at
    # the first coef<-): setting the coefficients to themselves computes them.
    if (length(coef(init)) > 0) coef(init) <- coef(init)
    natural <- coef(init, unconstrained = FALSE)
    case$vf <- NULL
    c(case, list(
      unconstrained = I(as.numeric(coef(init, unconstrained = TRUE))),
      natural = I(as.numeric(natural)),
      natural_names = I(if (is.null(names(natural))) character(0) else names(natural)),
      weights = as.numeric(varWeights(init)),
      loglik = sum(log(varWeights(init)))
    ))
  })
)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "variance.json")
