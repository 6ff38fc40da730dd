"""Command-line interface: ``mixedmodels fit``, ``mixedmodels datasets``.

Examples
--------
::

    mixedmodels fit "Reaction ~ Days + (Days | Subject)" --data sleepstudy
    mixedmodels fit "Reaction ~ Days + (Days | Subject)" --data sleepstudy --ml --format json
    mixedmodels fit "y ~ x + (1 | g)" --data mydata.csv --format csv --output estimates.csv
    mixedmodels datasets

Errors in the input (a column not in the data, an unknown dataset, a formula
that does not parse ...) print ``error: <message>`` on stderr and exit with
status 2; warnings (singular fit, dropped rows ...) print ``warning: <message>``.

Only the standard library is imported at module level, so ``--help`` and
``--version`` stay fast; numpy, pandas and the fitting code load on demand.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from mixedmodels import api

__all__ = ["build_parser", "fit_to_json", "main", "read_data"]

EXIT_OK = 0
EXIT_ERROR = 2


class CLIError(Exception):
    """An input problem detected by the CLI itself (printed as ``error: ...``)."""


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``mixedmodels`` command (``fit``, ``datasets``)."""
    from mixedmodels.support.version import VERSION

    parser = argparse.ArgumentParser(
        prog="mixedmodels",
        description="Fit linear mixed-effects models (a Python port of lme4's lmer).",
    )
    parser.add_argument(
        "--version", action="version", version=f"mixedmodels {VERSION}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fit = sub.add_parser(
        "fit",
        help="fit a linear mixed model (lmer) and print the results",
        description=(
            "Fit a linear mixed model with an lme4 formula, by REML (default) or ML, "
            "and print its summary (text), every estimate (json) or a tidy table (csv)."
        ),
    )
    fit.add_argument("formula", metavar="FORMULA", help='lme4 formula, e.g. "Reaction ~ Days + (Days | Subject)"')
    fit.add_argument(
        "--data",
        required=True,
        metavar="NAME_OR_PATH",
        help="a bundled dataset name (case-insensitive; see `mixedmodels datasets`) "
        "or a path to a .csv or .parquet file",
    )
    fit.add_argument("--ml", action="store_true", help="fit by maximum likelihood instead of REML")
    fit.add_argument(
        "--format",
        choices=("text", "json", "csv"),
        default="text",
        help="text: lme4-style summary (default); json: all estimates; "
        "csv: tidy fixed effects with 95%% Wald intervals, then variance parameters",
    )
    fit.add_argument("--weights", metavar="COL", help="column of prior weights")
    fit.add_argument(
        "--family",
        metavar="NAME",
        help="fit a GLMM (lme4's glmer): binomial, poisson, gamma, inverse_gaussian",
    )
    fit.add_argument("--link", metavar="NAME", help="the GLMM's link (default: the family's)")
    fit.add_argument(
        "--nagq", type=int, default=1, metavar="N",
        help="GLMM: 1 Laplace (default), 0 fast approximation, > 1 quadrature nodes",
    )
    fit.add_argument(
        "--ddf", metavar="METHOD",
        help="text summary's t tests: satterthwaite (lmer default), kenward-roger, asymptotic, "
             "or lme4 (lme4's layout, no df)",
    )
    fit.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")

    ds = sub.add_parser(
        "datasets",
        help="list the bundled datasets",
        description="List the bundled datasets: name, rows, columns, description.",
    )
    ds.add_argument(
        "--format", choices=("text", "csv", "json"), default="text", help="output format (default text)"
    )
    return parser


# ---------------------------------------------------------------------- data


def read_data(name_or_path: str) -> Any:
    """Return the data named on the command line as a pandas DataFrame.

    ``name_or_path`` is a bundled dataset (by name, case-insensitive), a
    .csv / .parquet file or a directory of .parquet files (read as one data
    set). Raises CLIError for a missing or unreadable file, DataError for an
    unknown dataset name.
    """
    lower = name_or_path.lower()
    if os.path.isdir(name_or_path):
        return _read_parquet_directory(name_or_path)
    is_file_like = lower.endswith((".csv", ".parquet", ".pq")) or os.sep in name_or_path or (
        os.altsep is not None and os.altsep in name_or_path
    )
    if os.path.isfile(name_or_path) or is_file_like:
        if not os.path.isfile(name_or_path):
            raise CLIError(f"data file {name_or_path!r} does not exist")
        if lower.endswith((".parquet", ".pq")):
            return _read_parquet(name_or_path, "parquet file")
        if lower.endswith(".csv"):
            import pandas as pd

            try:
                return pd.read_csv(name_or_path)
            except Exception as exc:  # noqa: BLE001
                raise CLIError(f"cannot read CSV file {name_or_path!r}: {exc}") from None
        raise CLIError(
            f"cannot tell the format of {name_or_path!r}: use a .csv or .parquet file"
        )
    from mixedmodels import datasets

    return datasets.load(name_or_path)


def _read_parquet_directory(path: str) -> Any:
    """Return a directory of Parquet files as one data set.

    Raises a CLIError saying what a directory must hold when it has no
    Parquet file.
    """
    if not any(f.lower().endswith((".parquet", ".pq")) for f in os.listdir(path)):
        raise CLIError(
            f"data path {path!r} is a directory without .parquet files: give a .csv or "
            ".parquet file, a directory of .parquet files, or a bundled dataset's name"
        )
    return _read_parquet(path, "parquet directory")


def _read_parquet(path: str, what: str) -> Any:
    """``pd.read_parquet`` of a file or directory, with errors as CLIError."""
    import pandas as pd

    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise CLIError(
            "reading parquet files needs pyarrow: pip install pyarrow "
            "(or pip install 'mixedmodels[parquet]')"
        ) from None
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is an input error
        raise CLIError(f"cannot read {what} {path!r}: {exc}") from None


# ---------------------------------------------------------------------- output


def _num(value: Any) -> float | None:
    """Return a float for JSON; None for NaN/inf/missing."""
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def fit_to_json(m: Any) -> dict[str, Any]:
    """Return the results protocol's numbers of a fitted model, as a JSON-ready dict."""
    vcov = m.vcov
    out: dict[str, Any] = {
        "formula": m.formula,
        "method": m.method,
        "nobs": int(m.nobs),
        "ngroups": {str(k): int(v) for k, v in m.ngroups.items()},
        "fixef": {str(k): _num(v) for k, v in m.fixef.items()},
        "se": {str(k): _num(v) for k, v in m.se.items()},
        "vcov": {
            "names": [str(n) for n in vcov.index],
            "matrix": [[_num(x) for x in row] for row in vcov.to_numpy().tolist()],
        },
        "varcorr": [
            {
                "grp": _str_or_none(r.grp),
                "var1": _str_or_none(r.var1),
                "var2": _str_or_none(r.var2),
                "vcov": _num(r.vcov),
                "sdcor": _num(r.sdcor),
            }
            for r in m.varcorr.itertuples(index=False)
        ],
        "theta": {str(k): _num(v) for k, v in m.theta.items()},
        "sigma": _num(m.sigma),
        "loglik": _num(m.loglik),
        "aic": _num(m.aic),
        "bic": _num(m.bic),
        "deviance": _num(m.deviance),
    }
    if getattr(m, "reml", False):
        out["reml_criterion"] = _num(m.reml_criterion)
    family = getattr(m, "family", None)
    if family is not None:
        out["family"], out["link"] = family.name, family.link.name
        out["deviance_conditional"] = _num(m.deviance_conditional)
    out["is_singular"] = bool(m.is_singular)
    opt = m.optsum
    out["optimizer"] = {
        "name": getattr(opt, "optimizer", None),
        "evaluations": int(opt.evaluations),
        "return_code": str(opt.return_code),
        "elapsed": _num(opt.elapsed),
    }
    return out


def _fit_csv(m: Any) -> str:
    import pandas as pd

    table = pd.concat([m.tidy(conf_int=True), m.tidy("ran_pars")], ignore_index=True, sort=False)
    first = ["effect", "group", "term"]
    cols = [c for c in first if c in table.columns] + [c for c in table.columns if c not in first]
    buf = io.StringIO()
    table[cols].to_csv(buf, index=False, float_format="%.15g")
    return buf.getvalue()


def _datasets_output(fmt: str) -> str:
    from mixedmodels import datasets

    table = datasets.list()[["name", "rows", "columns", "description"]]
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return json.dumps(table.to_dict(orient="records"), indent=2) + "\n"
    rows = [["name", "rows", "columns", "description"]] + [
        [str(r.name), str(r.rows), str(r.columns), str(r.description)]
        for r in table.itertuples(index=False)
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for r in rows:
        lines.append(
            "  ".join([r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].rjust(widths[2]), r[3]])
        )
    return "\n".join(lines) + "\n"


def _emit(text: str, output: str | None) -> None:
    if not text.endswith("\n"):
        text += "\n"
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        with open(output, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    except OSError as exc:
        raise CLIError(f"cannot write {output!r}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------- commands


def _cmd_fit(args: argparse.Namespace) -> int:
    data = read_data(args.data)
    if args.family is None and (args.link is not None or args.nagq != 1):
        raise CLIError("--link and --nagq need --family (a GLMM)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.family is None:
            kind, options = "lmer", dict(reml=not args.ml)
        else:
            kind, options = "glmer", dict(family=args.family, link=args.link, nagq=args.nagq)
        m = api.fit(kind, args.formula, data, weights=args.weights, **options)
        if args.format == "text":
            text = str(m.summary(ddf=args.ddf))
        elif args.format == "json":
            text = json.dumps(fit_to_json(m), indent=2, allow_nan=False)
        else:
            text = _fit_csv(m)
    seen = set()
    for w in caught:
        msg = str(w.message)
        if msg not in seen:
            seen.add(msg)
            print(f"warning: {msg}", file=sys.stderr)
    _emit(text, args.output)
    return EXIT_OK


def _cmd_datasets(args: argparse.Namespace) -> int:
    _emit(_datasets_output(args.format), None)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    from mixedmodels.exceptions import MixedModelsError

    try:
        if args.command == "fit":
            return _cmd_fit(args)
        return _cmd_datasets(args)
    except (MixedModelsError, CLIError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # e.g. `mixedmodels datasets | head`: stop quietly
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
