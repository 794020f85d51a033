"""Where the time of the benchmark cases goes (cProfile), written to tests/benchmarks/PROFILE.md.

    python -m tests.benchmarks.profile_cases [--engine dynalite] [--calls 200]

For each case whose overhead over raw boto3 exceeded 1.25x in RESULTS.md, ``--calls`` calls of ours run under
cProfile on a fresh engine; the report gives the time per call, the share spent inside botocore's
``BaseClient._make_api_call`` (the request: serialisation, signing, HTTP, the engine, parsing: what raw boto3
pays too), the rest (ours: PynamoDB models, validation, hashing, logging...), and the top functions by own time
and by cumulative time. Profiling slows Python code down more than it slows waiting, so read shares, not times.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from payment_examples.checkout.recovery import recover
from payment_examples.checkout.service import Checkout
from payment_examples.core.clock import SeededIds
from payment_examples.core.config import Settings
from payment_examples.core.logs import logger
from payment_examples.engine.local import local_aws
from payment_examples.handlers.process import make_handler
from payment_examples.idempotency.middleware import IdempotencyMiddleware
from payment_examples.payments.pagination import get_merchant_payments
from payment_examples.payments.seed import seed_payments
from payment_examples.payments.service import PaymentService
from tests.benchmarks.run import SECRET, _event

HERE = Path(__file__).resolve().parent
TOP = 14


def _cases(calls: int) -> dict[str, tuple[Callable[[], None], Callable[[int], object]]]:
    """name -> (setup, call(i)); setup runs untimed on the fresh engine."""
    state: dict[str, object] = {}
    bearer = "Bearer " + jwt.encode({"merchant_id": "bench", "exp": int(time.time()) + 3600}, SECRET, "HS256")
    body = {"amount": 1250, "currency": "USD"}

    def handler_setup() -> None:
        state["handler"] = make_handler(PaymentService())
        state["handler"](_event("replayed", body, bearer), None)  # type: ignore[operator]

    def create(i: int) -> object:
        return state["handler"](_event(f"create-{i}", body, bearer), None)  # type: ignore[operator]

    def replay(i: int) -> object:
        return state["handler"](_event("replayed", body, bearer), None)  # type: ignore[operator]

    def page_setup() -> None:
        seed_payments("bench-merchant", 2_000, ids=SeededIds(7))

    def page(i: int) -> object:
        return get_merchant_payments("bench-merchant", limit=50, status="captured")

    def capture_setup() -> None:
        service = PaymentService()

        def one(i: int) -> str:
            payment = service.create_payment("bench-capture", f"c-{i}", 1250, "USD").payment
            return service.authorize("bench-capture", payment.id, actor="bench").id

        with ThreadPoolExecutor(8) as pool:
            state["captures"] = list(pool.map(one, range(calls + 1)))
        state["capturer"] = service

    def capture(i: int) -> object:
        service: PaymentService = state["capturer"]  # type: ignore[assignment]
        return service.capture("bench-capture", state["captures"][i], actor="bench")  # type: ignore[index]

    def recovery_setup() -> None:
        service = PaymentService()

        def one(i: int) -> None:
            payment = service.create_payment("bench-recover", f"r-{i}", 1250, "USD").payment
            service.authorize("bench-recover", payment.id, actor="bench")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(300)))
        from payment_examples.checkout.processor import processor_for
        from payment_examples.core.config import get_settings

        state["checkout"] = Checkout(service, processor_for(get_settings()))  # type: ignore[arg-type]

    def sweep(i: int) -> object:
        return recover(state["checkout"], IdempotencyMiddleware(), older_than=timedelta(0))  # type: ignore[arg-type]

    return {
        "payment creation (process handler, no card)": (handler_setup, create),
        "idempotency check (repeat request)": (handler_setup, replay),
        "one filtered page (50 captured of 2,000)": (page_setup, page),
        "capture (one read, one write)": (capture_setup, capture),
        "recovery sweep of 300 payments (x1 per call)": (recovery_setup, sweep),
    }


def _stats_text(profile: cProfile.Profile, sort: str, restrict: str | None = None) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats(sort)
    if restrict:
        stats.print_stats(restrict, TOP)
    else:
        stats.print_stats(TOP)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), len(lines))
    text = "\n".join(lines[start:]).rstrip() or "(none)"
    for prefix in (str(Path(sys.prefix) / "lib"), str(HERE.parent.parent) + "/", sys.base_prefix + "/lib/"):
        text = text.replace(prefix, "")
    return text


def _inside_api_calls(profile: cProfile.Profile) -> float:
    stats = pstats.Stats(profile)
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if name == "_make_api_call" and filename.endswith("botocore/client.py"):
            return cumulative
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="dynalite")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--output", type=Path, default=HERE / "PROFILE.md")
    args = parser.parse_args(argv)
    settings = Settings(engine=args.engine, jwt_secret=SECRET, cursor_secret=SECRET)
    level = logger.log_level
    logger.setLevel("ERROR")
    sections = []
    try:
        for name, (setup, call) in _cases(args.calls).items():
            with local_aws(settings):
                setup()
                for i in range(3 if "capture" not in name else 0):  # warm-up (captures need fresh payments)
                    call(-1 - i)
                n = 5 if "recovery" in name else args.calls
                profile = cProfile.Profile()
                start = time.perf_counter()
                profile.enable()
                for i in range(n):
                    call(i)
                profile.disable()
                elapsed = time.perf_counter() - start
            inside = _inside_api_calls(profile)
            sections += [
                f"## {name}",
                "",
                f"{n} calls under cProfile: {elapsed / n * 1000:.2f} ms a call; inside botocore's "
                f"`_make_api_call` {inside / n * 1000:.2f} ms ({inside / elapsed:.0%}), the rest "
                f"{(elapsed - inside) / n * 1000:.2f} ms ({1 - inside / elapsed:.0%}).",
                "",
                "Top functions by own time:",
                "",
                "```",
                _stats_text(profile, "tottime"),
                "```",
                "",
                "Our package's functions by cumulative time:",
                "",
                "```",
                _stats_text(profile, "cumulative", "payment_examples"),
                "```",
                "",
            ]
    finally:
        logger.setLevel(level)
    header = [
        "# Profiles of the benchmark cases",
        "",
        f"Written by `python -m tests.benchmarks.profile_cases` on {args.engine}, "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}. What was found and changed is in RESULTS.md's notes "
        "and the commit log; this file is the evidence.",
        "",
    ]
    args.output.write_text("\n".join(header + sections))
    print(args.output.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
