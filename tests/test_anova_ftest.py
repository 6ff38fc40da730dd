"""F tests of formula terms (lmerTest's ``anova``: Type I, II and III with
Satterthwaite's or Kenward-Roger's denominator df) and the term -> column
contrasts behind them, against R.

R numbers (literals below) come from R 4.2.2, lme4 1.1-31, lmerTest 3.1-3,
pbkrtest 0.5.2::

    library(lmerTest)
    # crossed random effects, a 3-level x 2-level interaction, unbalanced
    d <- VerbAgg[as.integer(as.character(VerbAgg$id)) <= 60, ]
    d <- d[-seq(4, nrow(d), by = 7), ]          # 1234 rows
    d$y <- as.integer(d$resp) - 1
    m <- lmer(y ~ btype * situ + Gender + (1 | id) + (1 | item), data = d)
    # partially crossed random effects, factor x covariate, contr.sum coding
    m2 <- lmer(log(TICKS + 1) ~ YEAR * cHEIGHT + (1 | BROOD) + (1 | LOCATION),
               data = grouseticks, contrasts = list(YEAR = "contr.sum"))
    # correlated random slopes, 3 x 3 interaction
    dx <- read.csv("dietox.csv", stringsAsFactors = TRUE); dx$Pig <- factor(dx$Pig)
    m4 <- lmer(Weight ~ Evit * Cu + Time + (1 + Time | Pig), data = dx)
    for (ty in c("I", "II", "III")) for (dd in c("Satterthwaite", "Kenward-Roger"))
        print(anova(m, type = ty, ddf = dd), digits = 15)        # and m2, m4
    summary(m)$coefficients; summary(m, ddf = "Kenward-Roger")$coefficients   # and m2

Rows are [Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F)]; coefficient rows
[Estimate, Std. Error, df, t value, Pr(>|t|)]. Tolerances: df and p 1e-3
relative, F, t and sums of squares 1e-4 relative (our optimum and lme4's
differ in the 6th digit of θ).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from _reference import assert_close
from mixedmodels.exceptions import ModelSpecError
from mixedmodels.inference import ftest

DF_RTOL = 1e-3
P_RTOL = 1e-3
F_RTOL = 1e-4
COLUMNS = ["sum_sq", "mean_sq", "num_df", "den_df", "F", "p_value"]

VERBAGG_FORMULA = "y ~ btype * situ + Gender + (1 | id) + (1 | item)"
GROUSE_FORMULA = "log(TICKS + 1) ~ YEAR * cHEIGHT + (1 | BROOD) + (1 | LOCATION)"
DIETOX_FORMULA = "Weight ~ Evit * Cu + Time + (1 + Time | Pig)"


def fit(formula: str, data: pd.DataFrame, **kwargs) -> mm.LinearMixedModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mm.lmer(formula, data, **kwargs)


def verbagg_subset() -> pd.DataFrame:
    """The R subset above: ids 1-60, every 7th row from the 4th dropped."""
    d = mm.datasets.load("VerbAgg")
    d = d[d["id"].astype(str).astype(int) <= 60].reset_index(drop=True)
    d = d.drop(index=np.arange(3, len(d), 7)).reset_index(drop=True)
    return d.assign(y=d["resp"].cat.codes.astype(float))


@pytest.fixture(scope="module")
def verbagg():
    data = verbagg_subset()
    assert len(data) == 1234 and data["y"].sum() == 811  # R: nrow(d), sum(d$y)
    return fit(VERBAGG_FORMULA, data)


@pytest.fixture(scope="module")
def grouse():
    return fit(GROUSE_FORMULA, mm.datasets.load("grouseticks"), contrasts={"YEAR": "contr.sum"})


@pytest.fixture(scope="module")
def dietox():
    return fit(DIETOX_FORMULA, mm.datasets.load("dietox"))


def assert_anova(table: pd.DataFrame, ref: dict[str, list[float]], what: str) -> None:
    assert list(table.columns) == COLUMNS
    assert table.index.name == "term"
    assert list(table.index) == list(ref)
    R = np.array(list(ref.values()))
    assert_close(table["sum_sq"], R[:, 0], rtol=F_RTOL, what=f"{what} sum_sq")
    assert_close(table["mean_sq"], R[:, 1], rtol=F_RTOL, what=f"{what} mean_sq")
    assert_close(table["num_df"], R[:, 2], rtol=0, what=f"{what} num_df")
    assert_close(table["den_df"], R[:, 3], rtol=DF_RTOL, what=f"{what} den_df")
    assert_close(table["F"], R[:, 4], rtol=F_RTOL, what=f"{what} F")
    assert_close(table["p_value"], R[:, 5], rtol=P_RTOL, what=f"{what} p")


def assert_coefs(table: pd.DataFrame, ref: dict[str, list[float]], what: str) -> None:
    R = np.array([ref[name] for name in table.index])
    for j, col in enumerate(["estimate", "se", "df", "t", "p_value"]):
        rtol = DF_RTOL if col in ("df", "p_value") else F_RTOL
        assert_close(table[col], R[:, j], rtol=rtol, atol=1e-10 if j == 0 else 0, what=f"{what} {col}")


VERBAGG_ANOVA = {
    (1, "satterthwaite"): {
        "btype": [6.419083552076621, 3.209541776038311, 2.0, 17.9837996460095, 8.00299550379693, 0.00326614998474265],
        "situ": [9.323095510591779, 9.323095510591779, 1.0, 17.9860388517661, 23.247147617699284, 0.000137100701153412],
        "Gender": [0.121335170446369, 0.121335170446369, 1.0, 58.0366923335501, 0.302549364144227, 0.584399365727734],
        "btype:situ": [0.250697839193665, 0.125348919596832, 2.0, 18.0403517179267, 0.312557651509216, 0.7354561402398753],
    },
    (1, "kenward-roger"): {
        "btype": [6.41905986311592, 3.20952993155796, 2.0, 17.9452561174748, 8.002965950107718, 0.003276661694707162],
        "situ": [9.323057802353127, 9.323057802353127, 1.0, 17.9474895052392, 23.24705359216996, 0.000137889087461138],
        "Gender": [0.121334530014306, 0.121334530014306, 1.0, 57.9513376615332, 0.302547767226261, 0.5844034548219921],
        "btype:situ": [0.25069187913446, 0.12534593956723, 2.0, 18.001726266848, 0.312550205222497, 0.735469598017619],
    },
    (2, "satterthwaite"): {
        "btype": [6.348167760931593, 3.174083880465796, 2.0, 17.9838321115641, 7.914581207102152, 0.003422977756212406],
        "situ": [9.321074162554588, 9.321074162554588, 1.0, 17.9860148621546, 23.24210738442548, 0.000137257494172337],
        "Gender": [0.119753517434332, 0.119753517434332, 1.0, 58.0351667011748, 0.298605510838312, 0.5868527846137614],
        "btype:situ": [0.250697839193665, 0.125348919596832, 2.0, 18.0403702557421, 0.312557651509216, 0.7354561363293778],
    },
    (2, "kenward-roger"): {
        "btype": [6.34814427773726, 3.17407213886863, 2.0, 17.9452874750761, 7.914551911594796, 0.00343383203734871],
        "situ": [9.32103646616948, 9.32103646616948, 1.0, 17.9474654470611, 23.242013388452968, 0.00013804659296201],
        "Gender": [0.11975288332463, 0.11975288332463, 1.0, 57.9497777429495, 0.298603929685162, 0.5868568502823233],
        "btype:situ": [0.25069187913446, 0.12534593956723, 2.0, 18.001726266848, 0.312550205222497, 0.735469598017619],
    },
    (3, "satterthwaite"): {
        "btype": [6.356153928249641, 3.17807696412482, 2.0, 17.9840946226139, 7.924537965044372, 0.003404831123772773],
        "situ": [9.323585983365101, 9.323585983365101, 1.0, 17.9861033559051, 23.248370612031042, 0.000137061495461179],
        "Gender": [0.119753517434332, 0.119753517434332, 1.0, 58.0351667011748, 0.298605510838312, 0.5868527846137614],
        "btype:situ": [0.25069783919369, 0.125348919596845, 2.0, 18.0403702557421, 0.312557651509248, 0.7354561363293552],
    },
    (3, "kenward-roger"): {
        "btype": [6.356130307641642, 3.178065153820821, 2.0, 17.9455485568101, 7.924508497475801, 0.003415646501976335],
        "situ": [9.323548081785752, 9.323548081785752, 1.0, 17.9475537770818, 23.248276104406504, 0.000137849718895246],
        "Gender": [0.11975288332463, 0.11975288332463, 1.0, 57.9497777429498, 0.298603929685162, 0.5868568502823233],
        "btype:situ": [0.250691879134485, 0.125345939567243, 2.0, 18.001726266848, 0.312550205222529, 0.7354695980175963],
    },
}
GROUSE_ANOVA = {
    (1, "satterthwaite"): {
        "YEAR": [29.42124738217818, 14.71062369108909, 2.0, 105.3739736342061, 46.75466200034657, 2.92083326016365e-15],
        "cHEIGHT": [11.33810285362681, 11.33810285362681, 1.0, 38.44063329123, 36.03580499225185, 5.4066431233984e-07],
        "YEAR:cHEIGHT": [2.14227820491812, 1.07113910245906, 2.0, 99.1689884554894, 3.40439316119303, 0.0371566956030508],
    },
    (1, "kenward-roger"): {
        "YEAR": [28.62066419262806, 14.31033209631403, 2.0, 101.7755039865137, 45.48109910072437, 7.72031137060188e-15],
        "cHEIGHT": [11.15462669979004, 11.15462669979004, 1.0, 50.1357408010141, 35.45266414534417, 2.55584850229729e-07],
        "YEAR:cHEIGHT": [2.07823922462543, 1.03911961231272, 2.0, 96.400622037032, 3.30247167054337, 0.0409971708211397],
    },
    (2, "satterthwaite"): {
        "YEAR": [24.0361081021797, 12.01805405108985, 2.0, 105.413086431433, 38.19688864728222, 3.33834581062876e-13],
        "cHEIGHT": [11.33810285362681, 11.33810285362681, 1.0, 38.44063329123, 36.03580499225185, 5.4066431233984e-07],
        "YEAR:cHEIGHT": [2.14227820491812, 1.07113910245906, 2.0, 98.913662260481, 3.40439316119303, 0.0371669529003735],
    },
    (2, "kenward-roger"): {
        "YEAR": [23.34046488200025, 11.67023244100013, 2.0, 101.8866486708014, 37.09044106834875, 7.90318542014284e-13],
        "cHEIGHT": [11.15462669979004, 11.15462669979004, 1.0, 50.1357408010141, 35.45266414534417, 2.55584850229729e-07],
        "YEAR:cHEIGHT": [2.07823922462543, 1.03911961231272, 2.0, 96.400622037032, 3.30247167054337, 0.0409971708211397],
    },
    (3, "satterthwaite"): {
        "YEAR": [24.03610810217979, 12.01805405108989, 2.0, 105.6369270226331, 38.19688864728236, 3.29208565924842e-13],
        "cHEIGHT": [11.72221347877797, 11.72221347877797, 1.0, 38.3077604392129, 37.25662083438116, 3.97709275762956e-07],
        "YEAR:cHEIGHT": [2.14227820491813, 1.07113910245907, 2.0, 99.4803377332195, 3.40439316119305, 0.0371442596617095],
    },
    (3, "kenward-roger"): {
        "YEAR": [23.34046488200032, 11.67023244100016, 2.0, 101.886648670801, 37.09044106834887, 7.9031854201423e-13],
        "cHEIGHT": [11.52961123600753, 11.52961123600753, 1.0, 50.005007055758, 36.64447460928974, 1.80707642737887e-07],
        "YEAR:cHEIGHT": [2.07823922462545, 1.03911961231272, 2.0, 96.400622037032, 3.30247167054339, 0.0409971708211387],
    },
}
DIETOX_ANOVA = {
    (1, "satterthwaite"): {
        "Evit": [5.90993403895452, 2.95496701947726, 2.0, 63.0374958308459, 0.489452422618967, 0.615271910922082],
        "Cu": [14.01012197345916, 7.00506098672958, 2.0, 63.040018439081, 1.160298591472921, 0.319994178654564],
        "Time": [45604.53772705248, 45604.53772705248, 1.0, 71.0773660369859, 7553.807310131184, 6.53370288147255e-74],
        "Evit:Cu": [2.91384632875996, 0.72846158218999, 4.0, 63.0381840192073, 0.120660326777796, 0.974623639873501],
    },
    (1, "kenward-roger"): {
        "Evit": [5.72821723079459, 2.8641086153973, 2.0, 62.9988012565069, 0.474402889652496, 0.624461288540405],
        "Cu": [13.57905497712045, 6.78952748856022, 2.0, 63.0013253283274, 1.124598222910038, 0.331214508378158],
        "Time": [45604.25396391905, 45604.2539639191, 1.0, 71.0115350171903, 7553.760308404195, 7.38128725491109e-74],
        "Evit:Cu": [2.8241516658418, 0.706037916460449, 4.0, 62.9994986133429, 0.116946131894707, 0.976039059622603],
    },
    (2, "satterthwaite"): {
        "Evit": [7.94308840863397, 3.97154420431698, 2.0, 63.03648548151, 0.65783540713938, 0.521490392181424],
        "Cu": [14.02483223891916, 7.01241611945958, 2.0, 63.0395399546071, 1.161516874962941, 0.319618453529601],
        "Time": [45606.262311270155, 45606.2623112702, 1.0, 71.0636581484876, 7554.092965408481, 6.69253652853099e-74],
        "Evit:Cu": [2.91384632875997, 0.728461582189992, 4.0, 63.0382110321879, 0.120660326777796, 0.974623640104713],
    },
    (2, "kenward-roger"): {
        "Evit": [7.69883514015865, 3.84941757007932, 2.0, 62.9977903481963, 0.637606691619197, 0.531932223268914],
        "Cu": [13.593220658102, 6.796610329051, 2.0, 63.0008471368717, 1.125771404676528, 0.330839595146025],
        "Time": [45606.106248180666, 45606.1062481807, 1.0, 70.9978409903444, 7554.067115557457, 7.55984379784107e-74],
        "Evit:Cu": [2.8241516658418, 0.706037916460449, 4.0, 62.9994986133431, 0.116946131894707, 0.976039059622603],
    },
    (3, "satterthwaite"): {
        "Evit": [7.90273304699919, 3.95136652349959, 2.0, 63.0386888104018, 0.654493232863387, 0.52320043616173],
        "Cu": [14.01579002042168, 7.00789501021084, 2.0, 63.0376374144906, 1.160768011148172, 0.319849580155366],
        "Time": [45606.2623112695, 45606.2623112695, 1.0, 71.0636581484876, 7554.092965408372, 6.69253652853461e-74],
        "Evit:Cu": [2.91384632875977, 0.728461582189943, 4.0, 63.0382110321879, 0.120660326777788, 0.974623640104716],
    },
    (3, "kenward-roger"): {
        "Evit": [7.6597388205221, 3.82986941026105, 2.0, 62.9999959544763, 0.634368789405399, 0.533623046281104],
        "Cu": [13.58444054683861, 6.7922202734193, 2.0, 62.9989427871467, 1.125044249196053, 0.331072142007637],
        "Time": [45606.10624818, 45606.10624818, 1.0, 70.9978409903444, 7554.067115557348, 7.55984379784494e-74],
        "Evit:Cu": [2.82415166584161, 0.706037916460401, 4.0, 62.9994986133429, 0.1169461318947, 0.976039059622606],
    },
}
VERBAGG_COEF_SATT = {
    "(Intercept)": [1.0427771875921952, 0.102785714675232, 29.7581258804526, 10.14515675536253, 3.57408051857702e-11],
    "btypescold": [-0.3392410866382802, 0.126912028413505, 18.008891962086, -2.673041246594556, 0.0155093516448967],
    "btypeshout": [-0.2496257084319066, 0.126819329654123, 17.9564165628839, -1.968356946158882, 0.0646630111255313],
    "situself": [-0.3340392228392411, 0.126947117828838, 18.0290195461153, -2.631325772118938, 0.0169286370204166],
    "GenderM": [-0.0714885517907928, 0.130824050088092, 58.0351667011748, -0.546448086132902, 0.586852784613761],
    "btypescold:situself": [0.0403069904971186, 0.179601756745107, 18.0574728093008, 0.224424255238899, 0.824947015404558],
    "btypeshout:situself": [-0.097737444633885, 0.179473432167908, 18.0061573200344, -0.544578902031838, 0.592724254905865],
}
VERBAGG_COEF_KR = {
    "(Intercept)": [1.0427771875921952, 0.102786105777699, 29.7691462169224, 10.145118152909395, 3.55976292422044e-11],
    "btypescold": [-0.3392410866382802, 0.126913139917377, 17.9703127546762, -2.673017836128964, 0.0155296472235254],
    "btypeshout": [-0.2496257084319066, 0.126819778640742, 17.9179388880219, -1.968349977483027, 0.0646979147909993],
    "situself": [-0.3340392228392411, 0.126948126319522, 17.990393483305, -2.631304868560885, 0.0169497608127409],
    "GenderM": [-0.0714885517907928, 0.130824396454239, 57.9497777429495, -0.546446639375852, 0.586856850282323],
    "btypescold:situself": [0.0403069904971186, 0.179604442879689, 18.0188053002302, 0.224420898786556, 0.824954950710694],
    "btypeshout:situself": [-0.097737444633885, 0.179474228479534, 17.9675701980636, -0.54457648578236, 0.592740090519767],
}
GROUSE_COEF_SATT = {
    "(Intercept)": [1.1226045124171777, 0.07689619327317462, 39.3170612494128, 14.59896081499265, 1.82274306270194e-17],
    "YEAR1": [-0.07539159864288726, 0.09024243523161991, 107.0035855581036, -0.835434000084152, 0.40533493494024],
    "YEAR2": [0.6958698375161562, 0.08784575760676205, 107.7717884459706, 7.921496227867816, 2.27560217468425e-12],
    "cHEIGHT": [-0.01335534071389902, 0.00218802984230511, 38.307760439213, -6.103820183653913, 3.97709275762982e-07],
    "YEAR1:cHEIGHT": [-0.0047508647304002, 0.00259552251449571, 101.8017283817165, -1.830407828815637, 0.070114650976426],
    "YEAR2:cHEIGHT": [-0.00164909957593723, 0.00250587388656394, 105.9678384452285, -0.658093603504717, 0.511905153475621],
}
GROUSE_COEF_KR = {
    "(Intercept)": [1.1226045124171777, 0.07765048054760824, 51.2713834756289, 14.457148294515683, 1.00659863508414e-19],
    "YEAR1": [-0.07539159864288726, 0.09153460297095466, 103.6651535361755, -0.823640417895407, 0.412034768792246],
    "YEAR2": [0.6958698375161562, 0.0891295599998391, 102.7538296577996, 7.807396754986924, 5.13455635285576e-12],
    "cHEIGHT": [-0.01335534071389902, 0.00220622967752972, 50.0050070557581, -6.053467982015721, 1.80707642737899e-07],
    "YEAR1:cHEIGHT": [-0.0047508647304002, 0.00263712883133682, 98.5910102398824, -1.801529251793083, 0.0746760999992077],
    "YEAR2:cHEIGHT": [-0.00164909957593723, 0.00254293091997761, 101.6669267606022, -0.648503489804493, 0.518121453783468],
}


CASES = [(t, d) for t in (1, 2, 3) for d in ("satterthwaite", "kenward-roger")]


@pytest.mark.parametrize("type_, ddf", CASES)
def test_verbagg_crossed_interaction(verbagg, type_, ddf):
    assert_anova(verbagg.anova(type=type_, ddf=ddf), VERBAGG_ANOVA[type_, ddf], f"VerbAgg {type_} {ddf}")


@pytest.mark.parametrize("type_, ddf", CASES)
def test_grouseticks_contr_sum_covariate_interaction(grouse, type_, ddf):
    assert_anova(grouse.anova(type=type_, ddf=ddf), GROUSE_ANOVA[type_, ddf], f"grouse {type_} {ddf}")


@pytest.mark.parametrize("type_, ddf", CASES)
def test_dietox_correlated_slopes(dietox, type_, ddf):
    assert_anova(dietox.anova(type=type_, ddf=ddf), DIETOX_ANOVA[type_, ddf], f"dietox {type_} {ddf}")


def test_grouseticks_ml_type3():
    # R: m3 <- lmer(log(TICKS + 1) ~ YEAR * cHEIGHT + (1 | BROOD) + (1 | LOCATION),
    #               data = grouseticks, REML = FALSE); anova(m3)
    ref = {
        "YEAR": [25.12150365146617, 12.56075182573309, 2.0, 110.7685088911237, 39.96530107833044, 8.57160586865486e-14],
        "cHEIGHT": [12.57780749755791, 12.57780749755791, 1.0, 38.3776382018741, 40.01956813726363, 1.95207142513605e-07],
        "YEAR:cHEIGHT": [2.25194431533685, 1.12597215766843, 2.0, 104.1468876987931, 3.58257347262011, 0.0312820262688771],
    }
    m = fit(GROUSE_FORMULA, mm.datasets.load("grouseticks"), reml=False)
    assert_anova(m.anova(), ref, "grouse ML III")


def test_verbagg_coefficients(verbagg):
    assert_coefs(verbagg.coef_table(), VERBAGG_COEF_SATT, "VerbAgg Satterthwaite")
    assert_coefs(verbagg.coef_table(ddf="kenward-roger"), VERBAGG_COEF_KR, "VerbAgg KR")


def test_grouseticks_coefficients(grouse):
    assert_coefs(grouse.coef_table(), GROUSE_COEF_SATT, "grouse Satterthwaite")
    assert_coefs(grouse.coef_table(ddf="KR"), GROUSE_COEF_KR, "grouse KR")


# ---------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("coding", ["contr.sum", "contr.helmert", "contr.poly"])
def test_type3_does_not_depend_on_the_coding(dietox, coding):
    """Type III hypotheses are built on the treatment-coded design and mapped
    to the model's coding: the same F tests whatever contrasts the factors use."""
    other = fit(DIETOX_FORMULA, mm.datasets.load("dietox"), contrasts={"Evit": coding, "Cu": coding})
    assert list(other.fixef.index) != list(dietox.fixef.index)
    a, b = dietox.anova(), other.anova()
    assert_close(b["F"], a["F"], rtol=1e-5, what=f"F under {coding}")
    assert_close(b["den_df"], a["den_df"], rtol=1e-4, what=f"df under {coding}")
    assert_close(b["num_df"], a["num_df"], rtol=0, what="num_df")


def test_type3_hypotheses_of_a_balanced_two_way_layout():
    """In a balanced layout with sum coding, Type III tests the coefficients of
    each term (marginal means equal), and Type I = II = III."""
    rng = np.random.default_rng(7)
    a, b, g = np.meshgrid(np.arange(3), np.arange(2), np.arange(8), indexing="ij")
    data = pd.DataFrame(
        {
            "a": pd.Categorical(np.array(list("pqr"))[a.ravel()]),
            "b": pd.Categorical(np.array(list("uv"))[b.ravel()]),
            "g": pd.Categorical(g.ravel().astype(str)),
        }
    )
    data["y"] = rng.normal(size=len(data)) + data["a"].cat.codes + rng.normal(size=8)[g.ravel()]
    m = fit("y ~ a * b + (1 | g)", data, contrasts={"a": "contr.sum", "b": "contr.sum"})
    hyp = m.anova().attrs["hypotheses"]
    names = list(m.fixef.index)
    for term, cols in {"a": ["a1", "a2"], "b": ["b1"], "a:b": ["a1:b1", "a2:b1"]}.items():
        L = hyp[term]
        # the rows span exactly the term's own coefficients (up to zapsmall's
        # 7-digit rounding of the coding map, as in lmerTest)
        assert np.allclose(L[:, [names.index(c) for c in names if c not in cols]], 0, atol=1e-6)
        assert np.linalg.matrix_rank(L) == len(cols)
    tables = [m.anova(type=t) for t in (1, 2, 3)]
    for t in tables[1:]:
        assert_close(t["F"], tables[0]["F"], rtol=1e-6, what="balanced F")


def test_single_term_model_uses_type1(verbagg):
    m = fit("y ~ btype + (1 | id) + (1 | item)", verbagg_subset())
    t1, t3 = m.anova(type="I"), m.anova(type="III")
    pd.testing.assert_frame_equal(t1, t3, check_exact=False, rtol=1e-12)
    assert list(t3.index) == ["btype"]


def test_term_mapping_and_hypotheses(grouse):
    terms = ftest.fixed_terms(grouse)
    assert [t.label for t in terms] == ["(Intercept)", "YEAR", "cHEIGHT", "YEAR:cHEIGHT"]
    assert [t.columns for t in terms] == [[0], [1, 2], [3], [4, 5]]
    assert terms[2].numeric == frozenset({"cHEIGHT"}) and terms[1].numeric == frozenset()
    # lmerTest's rule: a term is contained in another with all its variables and
    # the same covariates -- cHEIGHT in YEAR:cHEIGHT, not YEAR
    assert ftest.containment(terms) == {"YEAR": [], "cHEIGHT": ["YEAR:cHEIGHT"], "YEAR:cHEIGHT": []}
    table = grouse.anova()
    assert table.attrs["heading"] == "Type III Analysis of Variance Table with Satterthwaite's method"
    hyp = table.attrs["hypotheses"]
    assert set(hyp) == {"YEAR", "cHEIGHT", "YEAR:cHEIGHT"}
    assert all(L.shape[1] == 6 for L in hyp.values())
    assert [hyp[k].shape[0] for k in ("YEAR", "cHEIGHT", "YEAR:cHEIGHT")] == [2, 1, 2]


def test_factor_call_and_aliased_term_labels():
    data = mm.datasets.load("sleepstudy").assign(
        period=lambda d: np.where(d["Days"] < 5, "early", "late")
    )
    m = fit("Reaction ~ factor(Days) + period + (1 | Subject)", data)
    table = m.anova(type=1)
    assert list(table.index) == ["factor(Days)", "period"]
    assert table.loc["factor(Days)", "num_df"] == 9
    # period is a combination of the Days dummies: no columns left, NaN row
    assert table.loc["period"].isna().all()


def test_doolittle_reproduces_lmertest():
    # R: lmerTest:::doolittle(crossprod(cbind(1, c(1, 2, 3, 4), c(1, 0, 1, 1))))
    X = np.column_stack([np.ones(4), [1, 2, 3, 4], [1, 0, 1, 1]])
    L, U = ftest.doolittle(X.T @ X)
    np.testing.assert_allclose(L @ U, X.T @ X, rtol=1e-12)
    np.testing.assert_allclose(np.diag(L), 1.0)
    assert np.allclose(np.triu(L, 1), 0) and np.allclose(np.tril(U, -1), 0)


def test_bad_requests(verbagg):
    with pytest.raises(ModelSpecError, match="type"):
        verbagg.anova(type=4)
    with pytest.raises(ModelSpecError, match="satterthwaite"):
        verbagg.anova(ddf="asymptotic")
    g = mm.glmer(
        "cbind(incidence, size - incidence) ~ period + (1 | herd)",
        mm.datasets.load("cbpp"),
        family="binomial",
    )
    with pytest.raises(ModelSpecError, match="mixedmodels.anova"):
        g.anova()


def test_caller_data_untouched_and_model_unchanged(grouse):
    before = grouse.fixef.copy()
    data = mm.datasets.load("grouseticks")
    snapshot = data.copy()
    m = fit(GROUSE_FORMULA, data, contrasts={"YEAR": "contr.sum"})
    m.anova(type=3, ddf="kenward-roger")
    pd.testing.assert_frame_equal(data, snapshot)
    pd.testing.assert_series_equal(grouse.fixef, before)


# ---------------------------------------------------------------------------- ordered factors

# R: d <- droplevels(lme4::InstEval[1:3000, ])
#    m5 <- lmer(y ~ service * lectage + studage + (1 | s) + (1 | d), data = d)
#    anova(m5, type = "I"); anova(m5, type = "II"); anova(m5)
# lectage and studage are ordered factors: contr.poly in R and here.
INSTEVAL_ANOVA = {
    1: {
        "service": [4.60866613217987, 4.60866613217987, 1.0, 2148.992810197504, 3.47086704809075, 0.06259489853271726],
        "lectage": [31.28227833525956, 6.25645566705191, 5.0, 1150.563824489022, 4.71184615891017, 0.00028912024781011],
        "studage": [10.88873690047138, 3.62957896682379, 3.0, 133.136835779122, 2.73349938422059, 0.0462706828520225],
        "service:lectage": [13.21338839795713, 2.64267767959143, 5.0, 2953.760766713673, 1.99024676853307, 0.07696626953963606],
    },
    2: {
        "service": [8.29182657244856, 8.29182657244856, 1.0, 2203.761373937223, 6.24471957685126, 0.0125286786438581],
        "lectage": [17.88930619284761, 3.57786123856952, 5.0, 2862.290811340623, 2.6945498587719, 0.0195219667011132],
        "studage": [11.92338463253691, 3.97446154417897, 3.0, 137.299066691427, 2.99323648360481, 0.0331094261129748],
        "service:lectage": [13.21338839795714, 2.64267767959143, 5.0, 2914.976167722368, 1.99024676853308, 0.0769707577208069],
    },
    3: {
        "service": [3.42062550209705, 3.42062550209705, 1.0, 2620.680268324458, 2.57613287631923, 0.1086068967493691],
        "lectage": [23.60936684343673, 4.72187336868735, 5.0, 2864.784125727705, 3.55612539736791, 0.00329760309944611],
        "studage": [11.92338463253692, 3.97446154417897, 3.0, 133.463991095198, 2.99323648360481, 0.03321266933235557],
        "service:lectage": [13.21338839795714, 2.64267767959143, 5.0, 2914.381099072722, 1.99024676853308, 0.07697082751281771],
    },
}


@pytest.fixture(scope="module")
def insteval_subset():
    d = mm.datasets.load("InstEval").iloc[:3000]
    d = d.assign(
        **{c: d[c].cat.remove_unused_categories() for c in d.columns if d[c].dtype == "category"}
    )
    return fit("y ~ service * lectage + studage + (1 | s) + (1 | d)", d)


@pytest.mark.parametrize("type_", [1, 2, 3])
def test_insteval_ordered_factors(insteval_subset, type_):
    assert insteval_subset.fixef.index[2] == "lectage.L"
    assert_anova(insteval_subset.anova(type=type_), INSTEVAL_ANOVA[type_], f"InstEval {type_}")


# ---------------------------------------------------------------------------- special designs

# R: dx as above; dm <- dx[!(dx$Evit == "Evit200" & dx$Cu == "Cu175"), ]
#    m <- lmer(Weight ~ Evit * Cu + Time + (1 | Pig), data = dm)   # a missing cell:
#    anova(m, type = "I"); anova(m)                                 # 1 column dropped
#    m0 <- lmer(Weight ~ 0 + Evit + Cu + Time:Evit + (1 | Pig), data = dx)
#    anova(m0, type = "I"); anova(m0)
#    m1 <- lmer(Weight ~ Time * Start + (1 | Pig), data = dx); anova(m1)
# rows [Sum Sq, NumDF, DenDF, F value, Pr(>F)]
SPECIAL = {
    "missing cell I": (
        "Weight ~ Evit * Cu + Time + (1 | Pig)", 1, True,
        {
            "Evit": [39.7866460131, 2, 56.0031001581, 1.79488627553, 0.175571939194],
            "Cu": [12.3676331633, 2, 56.0033588124, 0.557938334843, 0.575536531082],
            "Time": [437466.346018, 1, 700.9343760261, 39470.6475240, 0.0],
            "Evit:Cu": [5.51640687883, 3, 56.0026408475, 0.165906972803, 0.918911093324],
        },
    ),
    "missing cell III": (
        "Weight ~ Evit * Cu + Time + (1 | Pig)", 3, True,
        {
            "Evit": [27.8042119906, 2, 56.0031614576, 1.25432534543, 0.293158028362],
            "Cu": [14.6415373885, 2, 56.0029133735, 0.660520479724, 0.520559843542],
            "Time": [437725.725252, 1, 700.0303061274, 39494.0501615, 0.0],
            "Evit:Cu": [5.51640687883, 3, 56.0026408323, 0.165906972803, 0.918911093324],
        },
    ),
    "no intercept I": (
        "Weight ~ 0 + Evit + Cu + Time:Evit + (1 | Pig)", 1, False,
        {
            "Evit": [73215.25721664, 3, 67.0034936169, 2178.05103855, 1.07439096396e-66],
            "Cu": [21.81909347, 2, 67.0040284037, 0.973631064055, 0.382988022107],
            "Evit:Time": [491643.87535130, 3, 786.0325708909, 14625.7145575, 0.0],
        },
    ),
    "no intercept III": (
        "Weight ~ 0 + Evit + Cu + Time:Evit + (1 | Pig)", 3, False,
        {
            "Evit": [1473.806770355, 3, 75.5560212203, 43.8436807959, 1.61281878827e-16],
            "Cu": [23.051260449, 2, 67.0041033832, 1.0286139188, 0.363077453351],
            "Evit:Time": [491643.875351304, 3, 786.0325708909, 14625.7145575433, 0.0],
        },
    ),
    "covariate interaction III": (
        "Weight ~ Time * Start + (1 | Pig)", 3, False,
        {
            "Time": [6272.082554895, 1, 787.070216503, 574.4744284162, 9.37184840531e-96],
            "Start": [772.000454741, 1, 107.230079389, 70.7092925025, 1.93825555419e-13],
            "Time:Start": [364.568739707, 1, 787.060083498, 33.3916871355, 1.08533625128e-08],
        },
    ),
}


@pytest.mark.parametrize("name", list(SPECIAL))
def test_special_designs(name):
    formula, type_, missing_cell, ref = SPECIAL[name]
    data = mm.datasets.load("dietox")
    if missing_cell:
        data = data[~((data["Evit"] == "Evit200") & (data["Cu"] == "Cu175"))]
    m = fit(formula, data)
    table = m.anova(type=type_)
    assert list(table.index) == list(ref)  # R's term labels ("Evit:Time")
    R = np.array(list(ref.values()))
    assert_close(table["sum_sq"], R[:, 0], rtol=F_RTOL, what=f"{name} sum_sq")
    assert_close(table["num_df"], R[:, 1], rtol=0, what=f"{name} num_df")
    assert_close(table["den_df"], R[:, 2], rtol=DF_RTOL, what=f"{name} den_df")
    assert_close(table["F"], R[:, 3], rtol=F_RTOL, what=f"{name} F")
    assert_close(table["p_value"], R[:, 4], rtol=P_RTOL, atol=1e-250, what=f"{name} p")


def test_intercept_only_model_has_empty_table():
    m = fit("Weight ~ 1 + (1 | Pig)", mm.datasets.load("dietox"))
    table = m.anova()
    assert table.empty and list(table.columns) == COLUMNS
