"""The OpenAPI schemas of both servers (the dashboard's and a replica process's), as a client
generator reads them (app/web/openapi.py): named operations, tags, only the error answers that
can happen, each in the one error shape. (A generated client run against a server:
test_generated_client.py.)"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from live_helpers import make_client, make_live, ok

from app.replica.service import create_replica_app
from app.web.openapi import TAGS
from replication.io.runner import ReplicaRunner
from test_runner import SECRET

CAMEL = re.compile(r"^[a-z]+(?:[A-Z][a-z0-9]*)*$")
ERROR_REFS = {"#/components/schemas/ErrorOut", "#/components/schemas/NotReadyOut"}


@pytest.fixture(scope="module")
def dashboard_spec() -> dict:
    return ok(make_client(make_live()).get("/openapi.json"))


@pytest.fixture(scope="module")
def replica_spec(tmp_path_factory) -> dict:
    runner = ReplicaRunner("lhr", {}, data_dir=tmp_path_factory.mktemp("lhr"), secret=SECRET)
    return ok(TestClient(create_replica_app(runner, access_log=False)).get("/openapi.json"))


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


@pytest.fixture(params=["dashboard", "replica"])
def spec(request, dashboard_spec, replica_spec) -> dict:
    return dashboard_spec if request.param == "dashboard" else replica_spec


def test_every_operation_has_a_unique_camel_case_id_not_fastapis(spec):
    ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    bad = [i for i in ids if not CAMEL.match(i) or "Api" in i or len(i) > 24]
    assert not bad, f"not a name a client should call: {bad}"


def test_the_walkthrough_operations_have_the_names_a_reader_expects(dashboard_spec):
    by_route = {(m, p): op["operationId"] for m, p, op in operations(dashboard_spec)}
    expected = {
        ("PUT", "/api/replicas/{replica_id}/kv/{key}"): "putKv",
        ("GET", "/api/replicas/{replica_id}/kv/{key}"): "getKv",
        ("DELETE", "/api/replicas/{replica_id}/kv/{key}"): "deleteKv",
        ("POST", "/api/replicas/{replica_id}/counters/{key}"): "addCounter",
        ("GET", "/api/replicas/{replica_id}/counters/{key}"): "getCounter",
        ("POST", "/api/replicas/{replica_id}/sets/{key}"): "changeSet",
        ("GET", "/api/replicas/{replica_id}/sets/{key}"): "getSet",
        ("POST", "/api/replicas/{replica_id}/maps/{key}"): "writeMap",
        ("GET", "/api/replicas/{replica_id}/maps/{key}"): "readMap",
        ("GET", "/api/replicas/{replica_id}/kv"): "listKv",
        ("POST", "/api/replicas/{replica_id}/batch"): "writeBatch",
        ("POST", "/api/faults/partition"): "partition",
        ("DELETE", "/api/faults/partition"): "heal",
        ("POST", "/api/replicas/{replica_id}/crash"): "crash",
        ("POST", "/api/replicas/{replica_id}/recover"): "recover",
        ("GET", "/api/sim"): "getSim",
        ("POST", "/api/scenarios/{name}"): "startScenario",
    }
    assert {k: by_route.get(k) for k in expected} == expected
    assert "watch" not in by_route.values()  # reserved for the change stream


def test_every_operation_is_tagged_with_a_known_area(spec):
    known = {t["name"] for t in TAGS}
    for method, path, op in operations(spec):
        assert len(op.get("tags", [])) == 1 and op["tags"][0] in known, (method, path, op.get("tags"))
    assert {t["name"] for t in spec["tags"]} <= known


def test_fastapis_validation_error_shape_is_declared_nowhere(spec):
    assert "HTTPValidationError" not in str(spec)
    assert "ValidationError" not in spec["components"]["schemas"]


def test_every_error_answer_is_declared_with_the_error_shape(spec):
    for method, path, op in operations(spec):
        for status, answer in op["responses"].items():
            if int(status) >= 400:
                ref = answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
                assert ref in ERROR_REFS, (method, path, status, answer)


def test_a_get_declares_no_answer_that_only_a_body_can_cause(spec):
    for method, path, op in operations(spec):
        if method == "GET":
            assert not {"413", "415"} & set(op["responses"]), (path, sorted(op["responses"]))
            assert "requestBody" not in op


def test_a_route_whose_parameters_cannot_fail_validation_declares_no_422(dashboard_spec):
    paths = dashboard_spec["paths"]
    assert "422" not in paths["/api/replicas/{replica_id}/recover"]["post"]["responses"]
    assert "422" not in paths["/api/scenarios/runs/{run_id}"]["get"]["responses"]
    # one that can: its body
    assert paths["/api/sim/speed"]["put"]["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorOut"}


def test_partitions_422_has_the_error_schema(spec):
    answer = spec["paths"]["/api/faults/partition"]["post"]["responses"]["422"]
    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
    assert "invalid_partition" in answer["description"]


def test_a_key_says_its_length_limit_and_reads_say_how_to_wait(dashboard_spec):
    op = dashboard_spec["paths"]["/api/replicas/{replica_id}/kv/{key}"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["key"]["schema"]["maxLength"] == 256 and "256 bytes" in params["key"]["description"]
    wait = params["wait_converged"]["schema"]
    assert wait["anyOf"][0]["minimum"] == 0 and wait["anyOf"][0]["maximum"] == 30000
    assert op["responses"]["200"]["headers"]["X-Converged"]["schema"]["enum"] == ["true", "false"]


def test_statuses_are_enums_and_a_202_declares_its_location(dashboard_spec, replica_spec):
    schemas = dashboard_spec["components"]["schemas"]
    assert schemas["ReplicaState"]["properties"]["status"]["enum"] == ["up", "down"]
    assert schemas["RunOut"]["properties"]["status"]["enum"] == ["running", "passed", "failed", "cancelled"]
    started = dashboard_spec["paths"]["/api/scenarios/{name}"]["post"]["responses"]["202"]
    assert "Location" in started["headers"]  # and it is sent: test_scenarios_api
    # the replica's own observation routes answer typed bodies, not `dict`
    paths = replica_spec["paths"]
    for path, model in [("/api/status", "StatusOut"), ("/api/replicas", "ReplicaSummaries"),
                        ("/api/detail", "DetailOut")]:
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model}"}, (path, schema)
    rs = replica_spec["components"]["schemas"]
    assert rs["StatusOut"]["properties"]["peers"]["additionalProperties"]["enum"] == ["alive", "suspect", "dead"]
    assert rs["DetailOut"]["properties"]["status"]["enum"] == ["up", "down"]



def test_a_route_added_without_a_tag_gets_its_area_from_its_path():
    from app.web.openapi import reshape

    validation = {"422": {"content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/HTTPValidationError"}}}}}
    schema = {"paths": {
        "/api/replicas/{replica_id}/watch": {"get": {"responses": dict(validation), "parameters": [
            {"name": "replica_id", "in": "path", "schema": {"type": "string"}},
            {"name": "prefix", "in": "query", "schema": {"type": "string", "maxLength": 256}}]}},
        "/api/replicas/{replica_id}/crash": {"post": {"responses": dict(validation), "parameters": [
            {"name": "replica_id", "in": "path", "schema": {"type": "string"}}]}},
    }, "components": {"schemas": {"HTTPValidationError": {}, "ValidationError": {}}}}
    out = reshape(schema, {"ErrorOut": {"type": "object"}, "ErrorDetail": {"type": "object"}})
    watch, crash = out["paths"]["/api/replicas/{replica_id}/watch"]["get"], \
        out["paths"]["/api/replicas/{replica_id}/crash"]["post"]
    assert watch["tags"] == ["data"] and crash["tags"] == ["faults"]
    # a query bound can fail validation: our shape; a bare path string cannot: no 422 at all
    assert watch["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    assert "422" not in crash["responses"]
    assert "HTTPValidationError" not in str(out)
