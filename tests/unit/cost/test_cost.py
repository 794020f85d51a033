"""CostEstimator: one monthly bill worked out by hand, the provisioned alternative and its break-even, the price
files (dated and sourced), and bad inputs."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from payment_examples.core.errors import ConfigurationError
from payment_examples.cost.estimator import REQUIRED_PRICES, CostEstimator, Pricing, WorkloadMetrics

ROOT = Path(__file__).resolve().parents[3]

# Round prices so the bill below can be worked out on paper.
PRICES = {
    "dynamodb.on_demand.write_request_unit": 1.00,  # per million
    "dynamodb.on_demand.read_request_unit": 0.20,
    "dynamodb.standard_ia.on_demand.write_request_unit": 1.25,
    "dynamodb.standard_ia.on_demand.read_request_unit": 0.25,
    "dynamodb.storage.gb_month": 0.25,
    "dynamodb.standard_ia.storage.gb_month": 0.10,
    "dynamodb.pitr.gb_month": 0.20,
    "dynamodb.backup.gb_month": 0.10,
    "lambda.gb_second.x86_64": 0.00002,
    "lambda.gb_second.arm64": 0.00001,
}
PER = {
    "dynamodb.on_demand.write_request_unit": 1_000_000,
    "dynamodb.on_demand.read_request_unit": 1_000_000,
    "dynamodb.standard_ia.on_demand.write_request_unit": 1_000_000,
    "dynamodb.standard_ia.on_demand.read_request_unit": 1_000_000,
    "dynamodb.streams.read_request_unit": 100_000,
    "kms.request": 10_000,
    "lambda.request": 1_000_000,
    "apigateway.http.request": 1_000_000,
    "apigateway.rest.request": 1_000_000,
    "s3.put_request": 1_000,
    "s3.get_request": 1_000,
}
OTHER = {
    "dynamodb.provisioned.wcu_hour": 0.001,
    "dynamodb.provisioned.rcu_hour": 0.0002,
    "dynamodb.standard_ia.provisioned.wcu_hour": 0.0012,
    "dynamodb.standard_ia.provisioned.rcu_hour": 0.00025,
    "dynamodb.streams.read_request_unit": 0.02,
    "kms.request": 0.03,
    "lambda.request": 0.20,
    "apigateway.http.request": 1.00,
    "apigateway.rest.request": 3.50,
    "s3.put_request": 0.005,
    "s3.get_request": 0.0004,
}


@pytest.fixture
def pricing(tmp_path: Path) -> Pricing:
    prices = {
        key: {"usd": usd, "per": PER.get(key, 1), "unit": "u", "as_of": "2026-01-01", "source": "https://example"}
        for key, usd in {**PRICES, **OTHER}.items()
    }
    free = {
        "dynamodb.storage_gb_month": 25,
        "dynamodb.provisioned_wcu": 25,
        "dynamodb.provisioned_rcu": 25,
        "lambda.requests": 1_000_000,
        "lambda.gb_seconds": 400_000,
        "kms.requests": 20_000,
    }
    document = {
        "region": "test-1",
        "region_name": "Test",
        "currency": "USD",
        "checked_on": "2026-11-29",
        "prices": prices,
        "free_tier": {k: {"quantity": v, "unit": "u", "source": "https://example"} for k, v in free.items()},
    }
    (tmp_path / "test-1.json").write_text(json.dumps(document))
    return Pricing.load("test-1", tmp_path)


def metrics(**overrides) -> WorkloadMetrics:
    values = dict(
        payments_per_month=10_000_000,
        read_units_per_payment=4,
        write_units_per_payment=9,
        index_write_units_per_payment=13,
        table_bytes_per_payment=1024,
        index_bytes_per_payment=2048,
        retention_months=12,
        lambda_invocations_per_payment=5,
        lambda_ms_per_invocation=100,
        lambda_memory_mb=1024,
        lambda_architecture="arm64",
        api_requests_per_payment=4,
        kms_requests_per_payment=1,
        s3_put_requests_per_payment=0.001,
        s3_get_requests_per_payment=0.0005,
    )
    return WorkloadMetrics(**{**values, **overrides})


def test_a_monthly_bill_worked_out_by_hand(pricing: Pricing) -> None:
    bill = CostEstimator(pricing).estimate_monthly(metrics())
    cost = {line.name: line.cost for line in bill.lines}
    # 10M payments x 4 RRU = 40M RRU x $0.20/M
    assert cost["DynamoDB reads"] == Decimal("8.00")
    assert cost["DynamoDB writes"] == Decimal("90.00")  # 90M WRU x $1/M
    assert cost["DynamoDB index writes"] == Decimal("130.00")  # 130M WRU
    # 12 months x 10M payments x 3 KiB = 360M KiB = 343.32275390625 GiB, minus 25 free, x $0.25
    stored = Decimal(12 * 10_000_000 * 3 * 1024) / 1024**3
    assert bill.line("DynamoDB storage").quantity == stored
    assert cost["DynamoDB storage"] == (stored - 25) * Decimal("0.25")
    # point-in-time recovery on the table data only (1 KiB per payment, no index): 114.44... GiB x $0.20
    assert cost["DynamoDB point-in-time recovery"] == stored / 3 * Decimal("0.20")
    # 50M invocations - 1M free = 49M x $0.20/M
    assert cost["Lambda requests"] == Decimal("9.80")
    # 50M x 0.1 s x 1 GB = 5M GB-s - 400k free = 4.6M x $0.00001
    assert cost["Lambda compute (arm64)"] == Decimal("46.00")
    assert cost["API Gateway HTTP API requests"] == Decimal("40.00")  # 40M x $1/M
    assert cost["KMS requests"] == Decimal("29.94")  # (10M - 20k) x $0.03/10k
    assert cost["S3 PUT requests"] == Decimal("0.05")  # 10k x $0.005/1k
    assert cost["S3 GET requests"] == Decimal("0.002")  # 5k x $0.0004/1k
    assert "DynamoDB on-demand backups" not in cost and "DynamoDB Streams reads" not in cost
    assert bill.total == sum(cost.values())
    assert bill.cost_per_1000_payments == bill.total / 10_000
    assert set(bill.by_component()) == {"dynamodb", "lambda", "api", "kms", "s3"}


def test_table_class_ia_prices_requests_higher_and_storage_lower_without_the_free_tier(pricing: Pricing) -> None:
    bill = CostEstimator(pricing).estimate_monthly(metrics(table_class="standard_ia"))
    assert bill.line("DynamoDB writes").cost == Decimal("112.50")  # 90M x $1.25/M
    stored = bill.line("DynamoDB storage").quantity
    assert bill.line("DynamoDB storage").cost == stored * Decimal("0.10")  # the 25 GB free tier is Standard only


def test_free_tier_can_be_left_out(pricing: Pricing) -> None:
    bill = CostEstimator(pricing).estimate_monthly(metrics(free_tier=False))
    assert bill.line("Lambda requests").cost == Decimal("10.00")


def test_provisioned_alternative_and_its_break_even(pricing: Pricing) -> None:
    m = metrics(provisioned_utilisation=0.5, provisioned_minimum_units=5, tables=6, indexes=7)
    provisioned = CostEstimator(pricing).estimate_monthly(m).provisioned
    # writes: 10M x 22 WRU / 2,628,000 s = 83.71 WRU/s, / 0.5 utilisation = 167.43 WCU
    wcu = Decimal(10_000_000 * 22) / 2_628_000 / Decimal("0.5")
    assert provisioned.write_capacity_units == wcu
    rcu = max(Decimal(65), Decimal(10_000_000 * 4) / 2_628_000 / Decimal("0.5"))  # 30.4 < the floor of 13 x 5
    assert provisioned.read_capacity_units == rcu
    expected = (wcu - 25) * 730 * Decimal("0.001") + (rcu - 25) * 730 * Decimal("0.0002")
    assert provisioned.provisioned_cost == expected
    assert provisioned.on_demand_cost == Decimal("228.00")
    # Below the break-even the provisioned floor (65 units each, 40 billable) costs more than on-demand
    volume = provisioned.break_even_payments_per_month
    assert provisioned.cheaper_above_break_even == "provisioned"
    estimator = CostEstimator(pricing)
    below, above = (estimator.provisioned_alternative(m.at_volume(v)) for v in (volume - 1, volume))
    assert below.on_demand_cost < below.provisioned_cost
    assert above.on_demand_cost >= above.provisioned_cost


def test_at_low_utilisation_provisioned_never_wins(pricing: Pricing) -> None:
    # $0.001 per WCU-hour at 10% use is $2.78 per million writes, more than on-demand's $1
    provisioned = CostEstimator(pricing).provisioned_alternative(metrics(provisioned_utilisation=0.1, free_tier=False))
    assert provisioned.break_even_payments_per_month is None
    assert provisioned.provisioned_cost > provisioned.on_demand_cost


def test_storage_grows_until_the_retention_period_then_stays_flat(pricing: Pricing) -> None:
    growth = CostEstimator(pricing).storage_growth(metrics(retention_months=3), 5)
    held = [gb for _, gb, _ in growth]
    assert held[0] * 2 == held[1] and held[0] * 3 == held[2] == held[3] == held[4]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"payments_per_month": -1}, "payments_per_month"),
        ({"payments_per_month": 1.5}, "payments_per_month"),
        ({"write_units_per_payment": -1}, "write_units_per_payment"),
        ({"retention_months": 0}, "retention_months"),
        ({"table_class": "glacier"}, "table_class"),
        ({"lambda_architecture": "sparc"}, "lambda_architecture"),
        ({"lambda_memory_mb": 64}, "lambda_memory_mb"),
        ({"api_type": "grpc"}, "api_type"),
        ({"provisioned_utilisation": 0}, "provisioned_utilisation"),
    ],
)
def test_bad_metrics_are_refused(override: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        metrics(**override)


def test_zero_payments_cost_nothing_per_thousand(pricing: Pricing) -> None:
    bill = CostEstimator(pricing).estimate_monthly(metrics(payments_per_month=0))
    assert bill.cost_per_1000_payments == 0


def test_an_unknown_region_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"no prices for region 'mars-1' \(have: .*us-east-1"):
        Pricing.load("mars-1")


def test_a_price_file_missing_a_price_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x-1.json").write_text(json.dumps({"region": "x-1", "checked_on": "2026-01-01", "prices": {}}))
    with pytest.raises(ConfigurationError, match="missing prices"):
        Pricing.load("x-1", tmp_path)


def test_a_malformed_price_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x-1.json").write_text('{"region": "x-1"}')
    with pytest.raises(ConfigurationError, match="malformed price file"):
        Pricing.load("x-1", tmp_path)


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_every_committed_price_is_dated_and_sourced(region: str) -> None:
    pricing = Pricing.load(region)
    assert set(REQUIRED_PRICES) <= set(pricing.prices)
    for key, price in pricing.prices.items():
        assert price.source.startswith("https://"), key
        assert len(price.as_of) == 10 and price.as_of[4] == "-", key
        assert price.usd > 0 and price.per >= 1, key


def test_the_us_east_1_list_prices_the_issue_names() -> None:
    pricing = Pricing.load("us-east-1")
    per_unit = {key: pricing.price(key).unit_price for key in pricing.prices}
    assert per_unit["dynamodb.on_demand.write_request_unit"] * 1_000_000 == Decimal("0.625")  # halved 2024-11-01
    assert per_unit["dynamodb.on_demand.read_request_unit"] * 1_000_000 == Decimal("0.125")
    assert per_unit["dynamodb.provisioned.wcu_hour"] == Decimal("0.00065")
    assert per_unit["dynamodb.provisioned.rcu_hour"] == Decimal("0.00013")
    assert per_unit["dynamodb.storage.gb_month"] == Decimal("0.25")
    assert per_unit["dynamodb.pitr.gb_month"] == Decimal("0.20")
    assert per_unit["lambda.gb_second.arm64"] == Decimal("0.0000133334")
    assert per_unit["apigateway.http.request"] * 1_000_000 == Decimal("1.00")
    assert pricing.free("dynamodb.storage_gb_month") == 25
