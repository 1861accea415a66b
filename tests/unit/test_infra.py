"""The AWS templates in infra/: cfn-lint finds nothing, and the checks cfn-lint cannot make.

cfn-lint validates every resource against the CloudFormation resource schemas (types, required
properties, allowed values, attribute names, references). On top of that: every ECS service runs
with roles of its own, IAM policies name actions explicitly and use ``Resource: "*"`` only for
actions that have no resource to name, and the lake bucket, stream and alarms are what the
operations guide says they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TEMPLATES = sorted(INFRA.glob("*.yaml"))
REGIONS = ["us-east-1", "eu-west-1"]

# Actions that AWS authorises only against "*" (they act on the account, not on a resource).
STAR_RESOURCE_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "logs:DescribeLogGroups",
    "s3:GetAccountPublicAccessBlock",
}


def load(path: Path) -> dict[str, Any]:
    return cfn_yaml.load(str(path))


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def ref_name(value: Any) -> str:
    """The logical id behind ``!Ref X`` or ``!GetAtt X.Arn``."""
    if "Ref" in value:
        return str(value["Ref"])
    return str(value["Fn::GetAtt"][0])


@pytest.fixture(scope="module")
def templates() -> dict[str, dict[str, Any]]:
    return {path.stem: load(path) for path in TEMPLATES}


def test_the_four_stacks_exist() -> None:
    assert [p.stem for p in TEMPLATES] == ["airflow", "alarms", "data", "services"]


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_finds_nothing(path: Path) -> None:
    matches = lint_file(path, config=ManualArgs(regions=REGIONS))
    assert [f"{m.rule.id} {m.linenumber}: {m.message}" for m in matches] == []


def test_cfn_lint_does_report_a_broken_template(tmp_path: Path) -> None:
    """The lint test above could not fail if the linter found nothing anywhere."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "AWSTemplateFormatVersion: '2010-09-09'\n"
        "Resources:\n"
        "  Stream:\n"
        "    Type: AWS::Kinesis::Stream\n"
        "    Properties:\n"
        "      ShardCount: many\n"
        "      StreamModeDetails: {StreamMode: SOMETIMES}\n"
    )
    assert len(lint_file(broken, config=ManualArgs(regions=REGIONS))) >= 2


def test_every_ecs_service_has_roles_of_its_own(templates: dict[str, dict[str, Any]]) -> None:
    template = templates["services"]
    tasks = resources(template, "AWS::ECS::TaskDefinition")
    services = resources(template, "AWS::ECS::Service")
    assert {s["Properties"]["ServiceName"] for s in services.values()} == {
        "collector",
        "speed",
        "delivery",
        "serving",
    }
    task_roles, execution_roles = [], []
    for service in services.values():
        task = tasks[ref_name(service["Properties"]["TaskDefinition"])]["Properties"]
        task_roles.append(ref_name(task["TaskRoleArn"]))
        execution_roles.append(ref_name(task["ExecutionRoleArn"]))
    assert len(set(task_roles)) == len(services), task_roles
    assert len(set(execution_roles)) == len(services), execution_roles
    roles = resources(template, "AWS::IAM::Role")
    assert set(task_roles) | set(execution_roles) <= set(roles)


def iam_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, role in resources(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                found.append((name, statement))
    return found


def test_iam_actions_are_explicit_and_star_resources_only_where_aws_requires(
    templates: dict[str, dict[str, Any]],
) -> None:
    statements = [s for t in templates.values() for s in iam_statements(t)]
    assert len(statements) > 20
    for role, statement in statements:
        actions = as_list(statement["Action"])
        assert statement["Effect"] == "Allow", (role, statement)
        assert all("*" not in action for action in actions), (role, actions)
        if "*" in as_list(statement.get("Resource", [])):
            assert set(actions) <= STAR_RESOURCE_ACTIONS, (role, actions)


def policy_actions(template: dict[str, Any], role: str) -> set[str]:
    return {a for name, s in iam_statements(template) if name == role for a in as_list(s["Action"])}


def test_each_service_may_do_only_its_job(templates: dict[str, dict[str, Any]]) -> None:
    services = templates["services"]
    collector = policy_actions(services, "CollectorTaskRole")
    speed = policy_actions(services, "SpeedTaskRole")
    delivery = policy_actions(services, "DeliveryTaskRole")
    assert "kinesis:PutRecords" in collector
    assert not any(a.startswith("s3:") for a in collector)
    assert "kinesis:GetRecords" not in collector
    assert "kinesis:GetRecords" in speed
    assert "s3:PutObject" not in speed
    assert {"kinesis:GetRecords", "s3:PutObject"} <= delivery
    assert policy_actions(services, "ServingTaskRole") == set()
    assert "Policies" not in services["Resources"]["ServingTaskRole"]["Properties"]


def test_lake_bucket_is_encrypted_private_and_expires_raw_and_errors(
    templates: dict[str, dict[str, Any]],
) -> None:
    (bucket,) = resources(templates["data"], "AWS::S3::Bucket").values()
    props = bucket["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    rules = {r.get("Prefix"): r for r in props["LifecycleConfiguration"]["Rules"]}
    assert "ExpirationInDays" in rules["raw/"]
    assert "ExpirationInDays" in rules["errors/"]


def test_stream_mode_is_a_parameter(templates: dict[str, dict[str, Any]]) -> None:
    data = templates["data"]
    assert set(data["Parameters"]["StreamMode"]["AllowedValues"]) == {"ON_DEMAND", "PROVISIONED"}
    stream = data["Resources"]["EventsStream"]["Properties"]
    assert stream["StreamModeDetails"]["StreamMode"] == {"Ref": "StreamMode"}
    assert stream["ShardCount"]["Fn::If"][0] == "IsProvisioned"


def test_alarms_cover_the_operations_guide_and_notify_the_topic(
    templates: dict[str, dict[str, Any]],
) -> None:
    alarms = resources(templates["alarms"], "AWS::CloudWatch::Alarm")
    metrics = set()
    for alarm in alarms.values():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        assert "docs/operations.md#" in props["AlarmDescription"]
        if "MetricName" in props:
            metrics.add(props["MetricName"])
        else:
            metrics |= {
                m["MetricStat"]["Metric"]["MetricName"] for m in props["Metrics"] if "MetricStat" in m
            }
    assert {
        "GetRecords.IteratorAgeMilliseconds",
        "SpeedConsumerFailures",
        "DeliveryConsumerFailures",
        "IncomingRecords",
        "HTTPCode_Target_5XX_Count",
        "lambdalake_consumer_millis_behind_latest",
    } <= metrics
    anchors = {
        d["AlarmDescription"].split("docs/operations.md#")[1].rstrip(".").split(".")[0]
        for d in (a["Properties"] for a in alarms.values())
    }
    guide = (ROOT / "docs" / "operations.md").read_text()
    for anchor in anchors:
        assert f"### {anchor.replace('-', ' ')}" in guide.lower(), anchor


def test_log_metric_filters_match_what_the_consumer_runtime_logs(
    templates: dict[str, dict[str, Any]],
) -> None:
    worker = (ROOT / "lambdalake" / "consumer" / "worker.py").read_text()
    filters = resources(templates["services"], "AWS::Logs::MetricFilter")
    assert filters
    for metric_filter in filters.values():
        terms = metric_filter["Properties"]["FilterPattern"].replace("?", "").split('"')[1::2]
        assert terms
        for term in terms:
            assert term in worker, term


def test_services_run_real_lambdalake_commands_with_real_settings(
    templates: dict[str, dict[str, Any]],
) -> None:
    from tests.unit.test_deploy_compose import assert_lambdalake_command, setting_env_names

    known = setting_env_names()
    tasks = resources(templates["services"], "AWS::ECS::TaskDefinition")
    commands = []
    for task in tasks.values():
        for container in task["Properties"]["ContainerDefinitions"]:
            if container["Name"] == "cloudwatch-agent":
                continue
            commands.append(container["Command"])
            names = [e["Name"] for e in container.get("Environment", [])]
            names += [s["Name"] for s in container.get("Secrets", [])]
            assert set(names) <= known, set(names) - known
    assert len(commands) == 4
    for command in commands:
        assert_lambdalake_command(command)


def test_mwaa_options_map_to_real_settings(templates: dict[str, dict[str, Any]]) -> None:
    from tests.unit.test_deploy_compose import setting_env_names

    options = templates["airflow"]["Resources"]["Environment"]["Properties"]["AirflowConfigurationOptions"]
    mapped = {f"LAMBDALAKE_{k.split('.', 1)[1].upper()}" for k in options if k.startswith("lambdalake.")}
    assert len(mapped) >= 8
    assert mapped <= setting_env_names(), mapped - setting_env_names()
    startup = (INFRA / "mwaa" / "startup.sh").read_text()
    assert "AIRFLOW__LAMBDALAKE__" in startup
