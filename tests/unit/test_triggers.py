"""The Lambda entry points on the embedded backend: every event shape routed to its trigger, partial batch
responses, API Gateway start/status, one Step Functions step, and the ASL document."""

from __future__ import annotations

import base64
import json
from collections import defaultdict

import pytest

from eventlog.codec import decode, encode
from eventlog.event import RETRY, START, Event
from eventlog.settings import SOURCES, load_settings
from handlers import handle_kinesis_event, lambda_handler
from handlers.asl import build as build_asl
from handlers.engine import Engine
from handlers.errors import HandlerError, PoisonRecord
from handlers.gate import Gate
from handlers.retries import ScheduledRetry
from handlers.triggers import runtime
from handlers.triggers.router import UnknownEvent, classify
from handlers.triggers.stepfunctions import StepRetry, record_json
from handlers.wiring import open_services
from projections.definition import from_dict

HERE = __name__
ATTEMPTS: dict[str, int] = defaultdict(int)
STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/fsmlog"
RETRY_QUEUE = "arn:aws:sqs:us-east-1:123456789012:fsmlog-retries"


def validate(context, obj):
    return "ok" if context.get("amount", 1) > 0 else "reject"


def flaky(context, obj):
    """Fails the first ``fail`` attempts of each machine."""
    ATTEMPTS[context.correlation_id] += 1
    if context.retries < context.get("fail", 0):
        raise RuntimeError("gateway timeout")
    return "done"


DEFINITION = {
    "machines": [
        {
            "name": "order",
            "max_retries": 2,
            "states": [
                {"name": "received", "initial": True, "do_action": f"{HERE}.validate",
                 "transitions": [{"event": "ok", "target": "charging"}, {"event": "reject", "target": "rejected"}]},
                {"name": "charging", "do_action": f"{HERE}.flaky",
                 "transitions": [{"event": "done", "target": "shipped"}]},
                {"name": "shipped", "final": True},
                {"name": "rejected", "final": True},
            ],
        }
    ]
}


@pytest.fixture
def settings(tmp_path):
    url = f"sqlite:///{tmp_path / 'fsmlog.db'}"
    return load_settings({}, **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES}, LEASE_WAIT_SECONDS=0,
                         RETRY_BASE_SECONDS=0.01, RETRY_CAP_SECONDS=0.02)


@pytest.fixture
def engine(settings):
    eng = runtime.build_engine(settings, from_dict(DEFINITION))
    runtime.set_engine(eng)
    yield eng
    runtime.reset()


def kinesis_event(records, arn=STREAM):
    return {"Records": [
        {
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": key, "sequenceNumber": seq,
                        "data": base64.b64encode(data).decode(), "approximateArrivalTimestamp": 1.5},
            "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"shardId-000000000000:{seq}",
            "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::123456789012:role/r",
            "awsRegion": "us-east-1", "eventSourceARN": arn,
        }
        for seq, key, data in records
    ]}


def sqs_event(messages, arn="arn:aws:sqs:us-east-1:123456789012:fsmlog-log"):
    return {"Records": [
        {
            "messageId": mid, "receiptHandle": f"rh-{mid}", "body": body,
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1", "SenderId": "x",
                           "ApproximateFirstReceiveTimestamp": "1"},
            "messageAttributes": attrs, "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": arn, "awsRegion": "us-east-1",
        }
        for mid, body, attrs in messages
    ]}


def start_record(engine, cid, **context):
    mdef = engine.definitions.machine("order")
    return encode(Event.create(START, cid, "order", mdef.hash, 0, 0, "received", None, 1.0, context))


def step_record(engine, cid, state, event, steps, **context):
    mdef = engine.definitions.machine("order")
    return encode(Event.create("step", cid, "order", mdef.hash, steps, 0, state, event, 1.0, context))


def log_records(engine):
    return [decode(r.data) for r in engine.services.log.read(None, 1000)]


def hold_lease(engine, cid):
    """Another worker holds the machine's lease (and will not let go within LEASE_WAIT_SECONDS=0)."""
    Gate(engine.services.cache, "other-worker", 60.0, 60.0).begin(cid, 99)


# ---------------------------------------------------------------- routing


@pytest.mark.parametrize("event, kind", [
    (kinesis_event([("1", "k", b"x")]), "kinesis"),
    ({"Records": [{"eventSource": "aws:dynamodb", "dynamodb": {}}]}, "dynamodb"),
    ({"Records": [{"EventSource": "aws:sns", "Sns": {}}]}, "sns"),
    (sqs_event([("m1", "eA==", {})]), "sqs"),
    ({"Records": [{"eventSource": "aws:s3"}]}, "records"),
    ({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}, "timer"),
    ({"httpMethod": "GET", "path": "/machines/x", "requestContext": {}}, "apigateway"),
    ({"version": "2.0", "rawPath": "/machines/x", "requestContext": {"http": {"method": "GET"}}}, "apigateway"),
    ({"fsmlog": {"machine": "order"}}, "stepfunctions"),
])
def test_each_event_shape_is_routed_to_its_trigger(event, kind):
    assert classify(event) == kind


def test_an_unknown_event_shape_raises_naming_its_keys(engine):
    with pytest.raises(UnknownEvent, match="keys alpha, beta") as info:
        lambda_handler({"alpha": 1, "beta": 2}, None)
    assert isinstance(info.value, HandlerError)
    with pytest.raises(UnknownEvent, match="list"):
        lambda_handler([1, 2], None)


def test_a_batch_of_only_unknown_sources_is_parked(engine):
    assert lambda_handler({"Records": [{"eventSource": "aws:s3", "s3": {}}]}, None) == {"batchItemFailures": []}
    [letter] = engine.services.dead_letters.list()
    assert "aws:s3" in letter.reason and json.loads(letter.data) == {"eventSource": "aws:s3", "s3": {}}


# ---------------------------------------------------------------- Kinesis


def test_kinesis_batch_runs_each_record_and_parks_bad_ones(engine):
    bad_b64 = "!!not base64!!"
    event = kinesis_event([("1", "a", start_record(engine, "a")), ("2", "b", start_record(engine, "b"))])
    event["Records"].append({**event["Records"][0], "eventID": "shardId-000000000000:3",
                             "kinesis": {**event["Records"][0]["kinesis"], "sequenceNumber": "3", "data": bad_b64}})
    event["Records"].append({"eventSource": "aws:dynamodb", "eventID": "x", "dynamodb": {}})
    event["Records"].append(kinesis_event([("5", "c", b"\xc1 garbage")])["Records"][0])
    assert lambda_handler(event, None) == {"batchItemFailures": []}
    nexts = {(r.correlation_id, r.steps, r.state, r.event) for r in log_records(engine)}
    assert nexts == {("a", 1, "received", "ok"), ("b", 1, "received", "ok")}
    letters = {x.position: x for x in engine.services.dead_letters.list()}
    assert letters["shardId-000000000000:3"].data == bad_b64.encode()
    assert letters["shardId-000000000000:5"].data == b"\xc1 garbage"
    assert "dynamodb" in letters["x"].reason
    assert len(letters) == 3


def test_kinesis_reports_only_the_first_record_it_could_not_handle(engine):
    hold_lease(engine, "busy")
    event = kinesis_event([
        ("10", "a", start_record(engine, "a")),
        ("11", "busy", start_record(engine, "busy")),
        ("12", "c", start_record(engine, "c")),
        ("13", "busy", step_record(engine, "busy", "received", "ok", 1)),
    ])
    assert handle_kinesis_event(event, engine) == {"batchItemFailures": [{"itemIdentifier": "11"}]}
    handled = {r.correlation_id for r in log_records(engine)}
    assert handled == {"a", "c"}  # records around the failed one still ran; Lambda's redelivery dedupes them


# ---------------------------------------------------------------- SQS, SNS, DynamoDB, timer


def test_sqs_reports_every_failed_message(engine):
    hold_lease(engine, "busy1")
    hold_lease(engine, "busy2")
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    event = sqs_event([
        ("m1", b64(start_record(engine, "busy1")), {}),
        ("m2", b64(start_record(engine, "ok1")), {}),
        ("m3", b64(start_record(engine, "busy2")), {}),
        ("m4", "%%%", {}),
    ])
    response = lambda_handler(event, None)
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]}
    assert [x.data for x in engine.services.dead_letters.list()] == [b"%%%"]
    assert {r.correlation_id for r in log_records(engine)} == {"ok1"}


def test_sqs_retry_queue_messages_are_requeued_to_the_log_or_wait_again(settings):
    services = open_services(settings)
    eng = Engine(from_dict(DEFINITION), services, settings.replace(PRIMARY_RETRY_SOURCE=RETRY_QUEUE))
    mdef = eng.definitions.machine("order")
    retry = Event.create(RETRY, "r1", "order", mdef.hash, 1, 1, "received", "ok", 1.0, {})
    early = Event.create(RETRY, "r2", "order", mdef.hash, 1, 1, "received", "ok", 1.0, {})
    due_later = {"fsmlog-due": {"stringValue": repr(eng.clock() + 3600), "dataType": "Number"}}
    event = sqs_event([("m1", base64.b64encode(encode(retry)).decode(), {}),
                       ("m2", base64.b64encode(encode(early)).decode(), due_later),
                       ("m3", base64.b64encode(b"junk").decode(), {})], arn=RETRY_QUEUE)
    try:
        assert lambda_handler.__module__ == "handlers"
        from handlers.triggers.sqs import handle_sqs_event

        assert handle_sqs_event(event, eng) == {"batchItemFailures": []}
        assert log_records(eng) == [retry]  # appended as it is, not run here
        assert services.retries.due(eng.clock() + 7200, 10)[0].data == encode(early)
        assert [x.data for x in services.dead_letters.list()] == [b"junk"]
    finally:
        services.close()


def test_sns_runs_its_record_and_raises_when_a_service_failed(engine):
    def sns(cid, data):
        return {"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": "arn:s",
                             "Sns": {"Type": "Notification", "MessageId": f"id-{cid}", "TopicArn": "arn:t",
                                     "Message": base64.b64encode(data).decode(), "Timestamp": "x"}}]}

    assert lambda_handler(sns("a", start_record(engine, "a")), None)["handled"] == 1
    assert [r.correlation_id for r in log_records(engine)] == ["a"]
    hold_lease(engine, "busy")
    with pytest.raises(HandlerError, match="id-busy"):
        lambda_handler(sns("busy", start_record(engine, "busy")), None)


def test_dynamodb_stream_new_images_run_and_removals_are_passed_over(engine):
    def rec(seq, name, image):
        body = {"Keys": {"cid": {"S": "a"}}, "SequenceNumber": seq, "SizeBytes": 10, "StreamViewType": "NEW_IMAGE"}
        if image is not None:
            body["NewImage"] = image
        return {"eventID": seq, "eventName": name, "eventVersion": "1.1", "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1", "dynamodb": body,
                "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/log/stream/2024"}

    data = base64.b64encode(start_record(engine, "a")).decode()
    event = {"Records": [
        rec("100", "INSERT", {"cid": {"S": "a"}, "seq": {"N": "1"}, "data": {"B": data}}),
        rec("101", "REMOVE", None),
        rec("102", "INSERT", {"cid": {"S": "b"}, "seq": {"N": "2"}}),
    ]}
    assert lambda_handler(event, None) == {"batchItemFailures": []}
    assert [r.correlation_id for r in log_records(engine)] == ["a"]
    [letter] = engine.services.dead_letters.list()
    assert letter.position == "102" and "NewImage.data.B" in letter.reason


def test_scheduled_event_moves_due_retries_into_the_log(engine):
    mdef = engine.definitions.machine("order")
    retry = Event.create(RETRY, "t1", "order", mdef.hash, 1, 1, "received", "ok", 1.0, {})
    engine.services.retries.schedule([ScheduledRetry("t1", encode(retry), engine.clock() - 1)])
    event = {"version": "0", "id": "1", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": "2024-01-01T00:00:00Z", "region": "us-east-1",
             "resources": ["arn:aws:events:us-east-1:123456789012:rule/timer"], "detail": {}}
    assert lambda_handler(event, None)["requeued"] == 1
    assert log_records(engine) == [retry]


# ---------------------------------------------------------------- API Gateway


def api_v1(method, path, body=None, query=None, b64=False):
    return {"resource": "/machines/{x}", "path": path, "httpMethod": method, "headers": {},
            "queryStringParameters": query, "pathParameters": None, "requestContext": {"httpMethod": method},
            "body": base64.b64encode(body.encode()).decode() if b64 and body else body, "isBase64Encoded": b64}


def api_v2(method, path, body=None):
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "", "headers": {},
            "requestContext": {"http": {"method": method, "path": path, "protocol": "HTTP/1.1"}},
            "body": body, "isBase64Encoded": False}


@pytest.mark.parametrize("shape", [api_v1, api_v2])
def test_api_gateway_starts_a_machine_and_reports_its_status(engine, shape):
    created = lambda_handler(shape("POST", "/prod/machines/order", json.dumps({"amount": 5})), None)
    assert created["statusCode"] == 201
    cid = json.loads(created["body"])["correlation_id"]
    assert created["headers"]["Location"] == f"/machines/{cid}"
    [start] = log_records(engine)
    assert (start.kind, start.correlation_id, start.context) == ("start", cid, {"amount": 5})
    status = lambda_handler(shape("GET", f"/machines/{cid}"), None)
    assert status["statusCode"] == 200
    body = json.loads(status["body"])
    assert (body["correlation_id"], body["status"], body["state"], body["machine"]) == \
        (cid, "running", "received", "order")


def test_api_gateway_answers_clear_json_errors(engine):
    def call(event):
        response = lambda_handler(event, None)
        return response["statusCode"], json.loads(response["body"])["error"]

    assert call(api_v1("POST", "/machines/nope", "{}"))[0] == 404
    assert "known machines: 'order'" in call(api_v1("POST", "/machines/nope", "{}"))[1]
    assert call(api_v1("POST", "/machines/order", "{not json"))[0] == 400
    assert call(api_v2("POST", "/machines/order", "[1, 2]")) == \
        (400, "request body must be a JSON object (the machine's context), not list")
    assert call(api_v2("GET", "/machines/missing")) == (404, "no machine with id 'missing'")
    assert call(api_v2("GET", "/elsewhere"))[0] == 404
    assert call(api_v2("DELETE", "/machines/order"))[0] == 405
    ok = lambda_handler(api_v1("POST", "/machines/order", '{"amount": 1}', {"correlation_id": "mine"}, b64=True), None)
    assert json.loads(ok["body"])["correlation_id"] == "mine"


# ---------------------------------------------------------------- Step Functions


def test_step_functions_task_runs_one_step_and_returns_the_next_record(engine):
    out = lambda_handler({"fsmlog": {"machine": "order", "context": {"amount": 3, "fail": 1},
                                     "correlation_id": "sf1"}}, None)["fsmlog"]
    assert (out["kind"], out["state"], out["event"], out["steps"]) == ("step", "received", "ok", 1)
    assert decode(base64.b64decode(out["data"])).context == {"amount": 3, "fail": 1}
    with pytest.raises(StepRetry, match="gateway timeout"):  # the state machine's Retry runs it again
        lambda_handler({"fsmlog": out, "retry_count": 0}, None)
    assert engine.services.retries.due(engine.clock() + 3600, 10) == []  # nothing scheduled by fsmlog itself
    charged = lambda_handler({"fsmlog": out, "retry_count": 1}, None)["fsmlog"]
    assert (charged["kind"], charged["state"], charged["event"], charged["steps"]) == ("step", "charging", "done", 2)
    done = lambda_handler({"fsmlog": charged, "retry_count": 0}, None)["fsmlog"]
    assert (done["kind"], done["state"], done["steps"]) == ("completed", "shipped", 3)
    assert ATTEMPTS["sf1"] == 2
    assert [r.kind for r in log_records(engine)] == ["start", "step", "step", "completed"]


def test_step_functions_last_attempt_returns_the_failed_record(engine):
    out = lambda_handler({"fsmlog": {"machine": "order", "context": {"fail": 9}}}, None)["fsmlog"]
    failed = lambda_handler({"fsmlog": out, "retry_count": 2}, None)["fsmlog"]  # max_retries is 2
    assert (failed["kind"], failed["error_type"]) == ("failed", "RuntimeError")


def test_step_functions_poison_input_is_parked_and_not_retried(engine):
    with pytest.raises(PoisonRecord, match="parked"):
        lambda_handler({"fsmlog": {"data": base64.b64encode(b"\x93junk").decode()}}, None)
    assert [x.data for x in engine.services.dead_letters.list()] == [b"\x93junk"]
    terminal = record_json(Event("completed", "z", "order", "h", 3, 0, "shipped", None, 1.0))
    assert lambda_handler({"fsmlog": terminal}, None)["fsmlog"]["kind"] == "completed"


def test_asl_document_has_a_task_per_state_and_routes_on_the_returned_event(engine):
    doc = build_asl(engine.definitions, "order", "arn:aws:lambda:us-east-1:123456789012:function:fsmlog",
                    engine.settings)
    states = doc["States"]
    assert doc["StartAt"] == "received"
    tasks = {n for n, s in states.items() if s["Type"] == "Task"}
    assert tasks == {"received", "charging", "shipped", "rejected"}
    assert states["charging"]["Retry"][0]["ErrorEquals"] == ["StepRetry"]
    assert states["charging"]["Retry"][0]["MaxAttempts"] == 2
    assert states["charging"]["Parameters"]["retry_count.$"] == "$$.State.RetryCount"
    routes = {(c["And"][0]["StringEquals"], c["And"][1]["StringEquals"]): c["Next"]
              for c in states["fsmlog.route"]["Choices"] if "And" in c}
    assert routes == {("received", "ok"): "charging", ("received", "reject"): "rejected",
                      ("charging", "done"): "shipped"}
    ends = {c["StringEquals"]: states[c["Next"]]["Type"] for c in states["fsmlog.route"]["Choices"] if "Variable" in c}
    assert ends == {"completed": "Succeed", "failed": "Fail", "aborted": "Fail"}
    assert all(s.get("Next") in states or s["Type"] in ("Succeed", "Fail", "Choice") for s in states.values())


def _engine_for_budget(tmp_path):
    from eventlog.settings import load_settings
    from handlers.engine import Engine
    from handlers.wiring import open_services
    from projections.definition import from_dict

    doc = {"machines": [{"name": "budget", "states": [
        {"name": "a", "initial": True, "transitions": [{"event": "go", "target": "b"}]},
        {"name": "b", "final": True}]}]}
    kinds = ("STREAM", "CHECKPOINT", "RETRY", "CACHE", "ENVIRONMENT", "METRICS", "DEAD_LETTER")
    settings = load_settings({}, **{f"PRIMARY_{k}_SOURCE": f"sqlite:///{tmp_path}/b.db" for k in kinds})
    return Engine(from_dict(doc, check_actions=False), open_services(settings), settings)


def test_a_spent_time_budget_leaves_the_rest_of_the_batch_for_redelivery(tmp_path):
    """Records not started before Lambda's time runs out are reported failed, not cut off mid-step."""
    from handlers.engine import Inbound
    from handlers.triggers import deadline_of, run_batch

    engine = _engine_for_budget(tmp_path)
    ids = engine.start_many("budget", [{}, {}, {}])
    records = engine.services.log.read(None, 10)
    inbounds = [Inbound(r.position, r.data, "test", f"seq-{i}") for i, r in enumerate(records)]

    class OutOfTime:
        def get_remaining_time_in_millis(self):
            return 0

    assert deadline_of(engine, OutOfTime()) <= engine.clock()
    out = run_batch(engine, inbounds, deadline_of(engine, OutOfTime()))
    assert out.handled == 0 and out.failed == ["seq-0", "seq-1", "seq-2"]
    assert all(engine.status(cid).steps == 0 for cid in ids)  # nothing ran
    out = run_batch(engine, inbounds, deadline_of(engine, None))  # redelivered with time to spare
    assert out.handled == 3 and out.failed == []
    assert all(engine.status(cid).status == "completed" for cid in ids)
