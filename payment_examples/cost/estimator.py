"""The monthly bill of a payment workload: DynamoDB priced from measured item sizes, plus the rest of the flow.

``CostEstimator(pricing).estimate_monthly(metrics)`` turns per-payment usage (``WorkloadMetrics``, usually
from ``cost_workload.measure_workload``) into a ``CostBreakdown``: one line per billed dimension with its
quantity, unit price and cost, the total, the cost per 1,000 payments, and the provisioned-capacity
alternative with its break-even volume. Prices come from ``data/pricing/<region>.json`` (dated, with their
sources); nothing here knows a price. Item sizes and capacity rules: ``item_size.py`` and ``capacity.py``
(re-exported here).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal

from payment_examples.core import ConfigurationError
from payment_examples.cost.capacity import (  # noqa: F401  (the issue's one import for sizes and capacity)
    batch_get_units,
    delete_units,
    index_write_units,
    put_units,
    query_units,
    read_units,
    storage_bytes,
    write_units,
)
from payment_examples.cost.item_size import ItemSizeError, item_size  # noqa: F401

PRICING_DIR = Path(__file__).resolve().parents[2] / "data" / "pricing"
HOURS_PER_MONTH = 730  # AWS bills a month as 730 hours
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
GB = 1024**3  # AWS's GB for storage billing is 2^30 bytes
TableClass = Literal["standard", "standard_ia"]


# -- prices ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    usd: Decimal
    per: int
    unit: str
    as_of: str
    source: str
    note: str = ""

    @property
    def unit_price(self) -> Decimal:
        return self.usd / self.per


@dataclass(frozen=True)
class Pricing:
    """One region's list prices and free tiers, as read from ``data/pricing/<region>.json``."""

    region: str
    region_name: str
    checked_on: str
    prices: dict[str, Price]
    free_tier: dict[str, Decimal]

    @classmethod
    def load(cls, region: str = "us-east-1", directory: str | Path | None = None) -> Pricing:
        folder = Path(directory) if directory is not None else PRICING_DIR
        path = folder / f"{region}.json"
        if not path.is_file():
            known = sorted(p.stem for p in folder.glob("*.json"))
            raise ConfigurationError(f"no prices for region {region!r} (have: {', '.join(known) or 'none'})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
            prices = {
                key: Price(Decimal(str(p["usd"])), int(p["per"]), p["unit"], p["as_of"], p["source"], p.get("note", ""))
                for key, p in data["prices"].items()
            }
            free = {key: Decimal(str(f["quantity"])) for key, f in data.get("free_tier", {}).items()}
            pricing = cls(data["region"], data.get("region_name", region), data["checked_on"], prices, free)
        except (KeyError, TypeError, ValueError, ArithmeticError) as error:
            raise ConfigurationError(f"{path}: malformed price file ({type(error).__name__}: {error})") from None
        missing = sorted(set(REQUIRED_PRICES) - set(prices))
        if missing:
            raise ConfigurationError(f"{path}: missing prices {', '.join(missing)}")
        return pricing

    def price(self, key: str) -> Price:
        try:
            return self.prices[key]
        except KeyError:
            raise ConfigurationError(f"no price {key!r} for {self.region}") from None

    def free(self, key: str) -> Decimal:
        return self.free_tier.get(key, Decimal(0))


REQUIRED_PRICES = (
    "dynamodb.on_demand.write_request_unit",
    "dynamodb.on_demand.read_request_unit",
    "dynamodb.standard_ia.on_demand.write_request_unit",
    "dynamodb.standard_ia.on_demand.read_request_unit",
    "dynamodb.provisioned.wcu_hour",
    "dynamodb.provisioned.rcu_hour",
    "dynamodb.standard_ia.provisioned.wcu_hour",
    "dynamodb.standard_ia.provisioned.rcu_hour",
    "dynamodb.storage.gb_month",
    "dynamodb.standard_ia.storage.gb_month",
    "dynamodb.pitr.gb_month",
    "dynamodb.backup.gb_month",
    "dynamodb.streams.read_request_unit",
    "kms.request",
    "lambda.request",
    "lambda.gb_second.x86_64",
    "lambda.gb_second.arm64",
    "apigateway.http.request",
    "apigateway.rest.request",
    "s3.put_request",
    "s3.get_request",
)


# -- what is priced -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadMetrics:
    """Usage per payment, and the assumptions the bill depends on. Units are DynamoDB request units."""

    payments_per_month: int
    read_units_per_payment: float
    write_units_per_payment: float  # table writes
    index_write_units_per_payment: float  # global secondary index writes
    table_bytes_per_payment: float  # stored item bytes, 100-byte overheads included, every table
    index_bytes_per_payment: float  # stored index entries, overheads included
    retention_months: int = 12  # payments are kept this long (then expire by TTL, which is free)
    table_class: TableClass = "standard"
    pitr: bool = True
    backups_retained: int = 0  # full on-demand backups kept at any time
    stream_reads_per_payment: float = 0.0  # DynamoDB Streams read request units
    lambda_invocations_per_payment: float = 0.0
    lambda_ms_per_invocation: float = 100.0
    lambda_memory_mb: int = 512
    lambda_architecture: Literal["arm64", "x86_64"] = "arm64"
    api_type: Literal["http", "rest"] | None = "http"
    api_requests_per_payment: float = 0.0
    kms_requests_per_payment: float = 0.0
    s3_put_requests_per_payment: float = 0.0
    s3_get_requests_per_payment: float = 0.0
    provisioned_utilisation: float = 0.5  # average consumed / provisioned capacity (auto scaling never hits 1)
    provisioned_minimum_units: int = 5  # read and write capacity floor per table and per index
    tables: int = 6
    indexes: int = 7
    free_tier: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.payments_per_month, int) or self.payments_per_month < 0:
            raise ConfigurationError(f"payments_per_month must be a whole number >= 0, got {self.payments_per_month!r}")
        for name in (
            "read_units_per_payment",
            "write_units_per_payment",
            "index_write_units_per_payment",
            "table_bytes_per_payment",
            "index_bytes_per_payment",
            "stream_reads_per_payment",
            "lambda_invocations_per_payment",
            "lambda_ms_per_invocation",
            "api_requests_per_payment",
            "kms_requests_per_payment",
            "s3_put_requests_per_payment",
            "s3_get_requests_per_payment",
        ):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.retention_months < 1:
            raise ConfigurationError(f"retention_months must be at least 1, got {self.retention_months!r}")
        if self.table_class not in ("standard", "standard_ia"):
            raise ConfigurationError(f"table_class must be standard or standard_ia, got {self.table_class!r}")
        if self.lambda_architecture not in ("arm64", "x86_64"):
            raise ConfigurationError(f"lambda_architecture must be arm64 or x86_64, got {self.lambda_architecture!r}")
        if not 128 <= self.lambda_memory_mb <= 10240:
            raise ConfigurationError(f"lambda_memory_mb must be within 128..10240, got {self.lambda_memory_mb!r}")
        if self.api_type not in (None, "http", "rest"):
            raise ConfigurationError(f"api_type must be http, rest or None, got {self.api_type!r}")
        if not 0 < self.provisioned_utilisation <= 1:
            raise ConfigurationError(f"provisioned_utilisation must be in (0, 1], got {self.provisioned_utilisation!r}")

    def at_volume(self, payments_per_month: int) -> WorkloadMetrics:
        return replace(self, payments_per_month=payments_per_month)


@dataclass(frozen=True)
class LineItem:
    name: str
    component: str  # dynamodb, lambda, api, kms, s3
    quantity: Decimal
    unit: str
    unit_price: Decimal
    cost: Decimal
    note: str = ""


@dataclass(frozen=True)
class ProvisionedAlternative:
    """The same reads and writes on provisioned capacity (auto scaling at the assumed utilisation)."""

    write_capacity_units: Decimal
    read_capacity_units: Decimal
    on_demand_cost: Decimal  # the on-demand request lines it replaces
    provisioned_cost: Decimal
    break_even_payments_per_month: int | None  # where the two cost the same; None: they never cross
    cheaper_above_break_even: str | None  # "provisioned" or "on-demand" (the other is cheaper below it)
    utilisation: float


@dataclass(frozen=True)
class CostBreakdown:
    region: str
    payments_per_month: int
    lines: tuple[LineItem, ...]
    provisioned: ProvisionedAlternative
    prices_checked_on: str
    assumptions: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> Decimal:
        return sum((line.cost for line in self.lines), Decimal(0))

    @property
    def cost_per_1000_payments(self) -> Decimal:
        if not self.payments_per_month:
            return Decimal(0)
        return self.total * 1000 / self.payments_per_month

    def by_component(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for line in self.lines:
            out[line.component] = out.get(line.component, Decimal(0)) + line.cost
        return out

    def line(self, name: str) -> LineItem:
        for line in self.lines:
            if line.name == name:
                return line
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "payments_per_month": self.payments_per_month,
            "prices_checked_on": self.prices_checked_on,
            "total_usd": _cents(self.total),
            "cost_per_1000_payments_usd": _micro(self.cost_per_1000_payments),
            "lines": [
                {
                    **asdict(line),
                    "quantity": float(line.quantity),
                    "unit_price": str(line.unit_price),
                    "cost": _cents(line.cost),
                }
                for line in self.lines
            ],
            "provisioned": {
                **asdict(self.provisioned),
                "write_capacity_units": float(self.provisioned.write_capacity_units),
                "read_capacity_units": float(self.provisioned.read_capacity_units),
                "on_demand_cost": _cents(self.provisioned.on_demand_cost),
                "provisioned_cost": _cents(self.provisioned.provisioned_cost),
            },
            "assumptions": self.assumptions,
        }

    def table(self) -> str:
        """A plain-text table of the lines, the total and the per-1,000 figure."""
        rows = [
            (
                line.name,
                f"{line.quantity:,.2f} {line.unit}",
                f"${line.unit_price:.10f}".rstrip("0"),
                f"${line.cost:,.2f}",
            )
            for line in self.lines
        ]
        header = ("line item", "quantity", "unit price", "monthly")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

        def fmt(*cells: str) -> str:
            return "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
            )

        lines = [fmt(*header), fmt(*("-" * w for w in widths))]
        lines += [fmt(*row) for row in rows]
        lines.append(fmt("total", "", "", f"${self.total:,.2f}"))
        lines.append(f"cost per 1,000 payments: ${self.cost_per_1000_payments:.4f}")
        p = self.provisioned
        if p.break_even_payments_per_month is None:
            crossing = "they never cross"
        else:
            crossing = (
                f"{p.cheaper_above_break_even} is cheaper above {p.break_even_payments_per_month:,} payments/month"
            )
        lines.append(
            f"provisioned instead of on-demand: ${p.provisioned_cost:,.2f} vs ${p.on_demand_cost:,.2f} "
            f"({p.write_capacity_units:,.0f} WCU, {p.read_capacity_units:,.0f} RCU at {p.utilisation:.0%} "
            f"utilisation); {crossing}"
        )
        return "\n".join(lines)


# -- the estimator ----------------------------------------------------------------------------------------------


class CostEstimator:
    def __init__(self, pricing: Pricing | None = None) -> None:
        self.pricing = pricing or Pricing.load()

    def estimate_monthly(self, metrics: WorkloadMetrics) -> CostBreakdown:
        lines = [*self._dynamodb_lines(metrics), *self._flow_lines(metrics)]
        return CostBreakdown(
            self.pricing.region,
            metrics.payments_per_month,
            tuple(lines),
            self.provisioned_alternative(metrics),
            self.pricing.checked_on,
            assumptions=asdict(metrics),
        )

    # DynamoDB -------------------------------------------------------------------------------------------------

    def _dynamodb_lines(self, m: WorkloadMetrics) -> list[LineItem]:
        n = Decimal(m.payments_per_month)
        ia = "standard_ia." if m.table_class == "standard_ia" else ""
        lines = [
            self._line(
                "DynamoDB reads",
                "dynamodb",
                n * _d(m.read_units_per_payment),
                "RRU",
                f"dynamodb.{ia}on_demand.read_request_unit",
            ),
            self._line(
                "DynamoDB writes",
                "dynamodb",
                n * _d(m.write_units_per_payment),
                "WRU",
                f"dynamodb.{ia}on_demand.write_request_unit",
            ),
            self._line(
                "DynamoDB index writes",
                "dynamodb",
                n * _d(m.index_write_units_per_payment),
                "WRU",
                f"dynamodb.{ia}on_demand.write_request_unit",
            ),
        ]
        table_gb, index_gb = self.stored_gb(m)
        free_storage = self._free("dynamodb.storage_gb_month", m) if m.table_class == "standard" else Decimal(0)
        storage_key = "dynamodb.standard_ia.storage.gb_month" if ia else "dynamodb.storage.gb_month"
        lines.append(
            self._line("DynamoDB storage", "dynamodb", table_gb + index_gb, "GB-month", storage_key, free=free_storage)
        )
        if m.pitr:  # charged on table data (global secondary indexes excluded)
            lines.append(
                self._line(
                    "DynamoDB point-in-time recovery", "dynamodb", table_gb, "GB-month", "dynamodb.pitr.gb_month"
                )
            )
        if m.backups_retained:
            lines.append(
                self._line(
                    "DynamoDB on-demand backups",
                    "dynamodb",
                    table_gb * m.backups_retained,
                    "GB-month",
                    "dynamodb.backup.gb_month",
                )
            )
        if m.stream_reads_per_payment:
            lines.append(
                self._line(
                    "DynamoDB Streams reads",
                    "dynamodb",
                    n * _d(m.stream_reads_per_payment),
                    "stream read requests",
                    "dynamodb.streams.read_request_unit",
                    free=self._free("dynamodb.streams_read_request_units", m),
                )
            )
        return lines

    def stored_gb(self, m: WorkloadMetrics, months: int | None = None) -> tuple[Decimal, Decimal]:
        """(table GB, index GB) held after ``months`` of traffic (default: the steady state, full retention)."""
        held = min(months if months is not None else m.retention_months, m.retention_months)
        payments = Decimal(m.payments_per_month) * held
        return payments * _d(m.table_bytes_per_payment) / GB, payments * _d(m.index_bytes_per_payment) / GB

    def storage_growth(self, m: WorkloadMetrics, months: int) -> list[tuple[int, Decimal, Decimal]]:
        """(month, GB held, storage cost of that month) for months 1..``months``: grows, then flat at retention."""
        out = []
        for month in range(1, months + 1):
            table_gb, index_gb = self.stored_gb(m, month)
            line = self._line(
                "storage",
                "dynamodb",
                table_gb + index_gb,
                "GB-month",
                "dynamodb.storage.gb_month",
                free=self._free("dynamodb.storage_gb_month", m),
            )
            out.append((month, table_gb + index_gb, line.cost))
        return out

    # the rest of the flow ---------------------------------------------------------------------------------

    def _flow_lines(self, m: WorkloadMetrics) -> list[LineItem]:
        n = Decimal(m.payments_per_month)
        lines = []
        invocations = n * _d(m.lambda_invocations_per_payment)
        if invocations:
            lines.append(
                self._line(
                    "Lambda requests",
                    "lambda",
                    invocations,
                    "requests",
                    "lambda.request",
                    free=self._free("lambda.requests", m),
                )
            )
            gb_seconds = invocations * _d(m.lambda_ms_per_invocation) / 1000 * Decimal(m.lambda_memory_mb) / 1024
            lines.append(
                self._line(
                    f"Lambda compute ({m.lambda_architecture})",
                    "lambda",
                    gb_seconds,
                    "GB-s",
                    f"lambda.gb_second.{m.lambda_architecture}",
                    free=self._free("lambda.gb_seconds", m),
                )
            )
        if m.api_type and m.api_requests_per_payment:
            label = "HTTP API" if m.api_type == "http" else "REST API"
            lines.append(
                self._line(
                    f"API Gateway {label} requests",
                    "api",
                    n * _d(m.api_requests_per_payment),
                    "requests",
                    f"apigateway.{m.api_type}.request",
                )
            )
        if m.kms_requests_per_payment:
            lines.append(
                self._line(
                    "KMS requests",
                    "kms",
                    n * _d(m.kms_requests_per_payment),
                    "requests",
                    "kms.request",
                    free=self._free("kms.requests", m),
                )
            )
        if m.s3_put_requests_per_payment:
            lines.append(
                self._line("S3 PUT requests", "s3", n * _d(m.s3_put_requests_per_payment), "requests", "s3.put_request")
            )
        if m.s3_get_requests_per_payment:
            lines.append(
                self._line("S3 GET requests", "s3", n * _d(m.s3_get_requests_per_payment), "requests", "s3.get_request")
            )
        return lines

    # provisioned -------------------------------------------------------------------------------------------

    def provisioned_alternative(self, m: WorkloadMetrics) -> ProvisionedAlternative:
        wcu, rcu, provisioned = self._provisioned(m)
        on_demand = self._on_demand_requests(m)
        volume, cheaper_above = self._break_even(m)
        return ProvisionedAlternative(
            wcu, rcu, on_demand, provisioned, volume, cheaper_above, m.provisioned_utilisation
        )

    def _on_demand_requests(self, m: WorkloadMetrics) -> Decimal:
        return sum((line.cost for line in self._dynamodb_lines(m)[:3]), Decimal(0))

    def _provisioned(self, m: WorkloadMetrics) -> tuple[Decimal, Decimal, Decimal]:
        ia = "standard_ia." if m.table_class == "standard_ia" else ""
        n, u = Decimal(m.payments_per_month), _d(m.provisioned_utilisation)
        floor = Decimal(m.provisioned_minimum_units * (m.tables + m.indexes))
        write_rate = n * _d(m.write_units_per_payment + m.index_write_units_per_payment) / SECONDS_PER_MONTH
        read_rate = n * _d(m.read_units_per_payment) / SECONDS_PER_MONTH
        wcu, rcu = max(floor, write_rate / u), max(floor, read_rate / u)
        cost = Decimal(0)
        for units, key, free in (
            (wcu, "wcu_hour", "dynamodb.provisioned_wcu"),
            (rcu, "rcu_hour", "dynamodb.provisioned_rcu"),
        ):
            billable = max(Decimal(0), units - self._free(free, m))
            cost += billable * HOURS_PER_MONTH * self.pricing.price(f"dynamodb.{ia}provisioned.{key}").unit_price
        return wcu, rcu, cost

    def _break_even(self, m: WorkloadMetrics) -> tuple[int | None, str | None]:
        """The monthly volume where on-demand requests and provisioned capacity cost the same, and which is
        cheaper above it. On-demand is linear in volume and provisioned convex (a floor, then linear), so
        their difference crosses zero at most once: bisection finds it."""

        def gap(volume: int) -> Decimal:  # > 0: on-demand costs more
            at = m.at_volume(volume)
            return self._on_demand_requests(at) - self._provisioned(at)[2]

        low, high = 1, 10**13
        at_low, at_high = gap(low), gap(high)
        if (at_low > 0) == (at_high > 0):
            return None, None
        while high - low > 1:
            middle = (low + high) // 2
            if (gap(middle) > 0) == (at_low > 0):
                low = middle
            else:
                high = middle
        return high, "provisioned" if at_high > 0 else "on-demand"

    # helpers ----------------------------------------------------------------------------------------------

    def _free(self, key: str, m: WorkloadMetrics) -> Decimal:
        return self.pricing.free(key) if m.free_tier else Decimal(0)

    def _line(
        self, name: str, component: str, quantity: Decimal, unit: str, price_key: str, *, free: Decimal = Decimal(0)
    ) -> LineItem:
        price = self.pricing.price(price_key)
        billable = max(Decimal(0), quantity - free)
        note = f"{free:,} {unit} free" if free and quantity else ""
        return LineItem(name, component, quantity, unit, price.unit_price, billable * price.unit_price, note)


def _d(value: float | int) -> Decimal:
    return Decimal(str(value))


def _cents(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _micro(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))
