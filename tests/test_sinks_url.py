"""from_url and the spoolkit.sinks namespace: schemes, options, errors, lazy imports."""

from __future__ import annotations

from pathlib import Path

import pytest

import spoolkit.sinks
from spoolkit.errors import ConfigError
from spoolkit.sinks import (
    HttpSink,
    JsonlSink,
    PostgresSink,
    RedisStreamSink,
    StdoutSink,
    from_url,
)
from tests.helpers import python_stdout


def test_all_is_sorted_and_every_name_resolves() -> None:
    """spoolkit.sinks.__all__ is sorted and each name is importable."""
    assert spoolkit.sinks.__all__ == sorted(spoolkit.sinks.__all__)
    for name in spoolkit.sinks.__all__:
        assert getattr(spoolkit.sinks, name) is not None
    assert set(spoolkit.sinks.__all__) <= set(dir(spoolkit.sinks))


def test_unknown_attribute_is_attribute_error() -> None:
    """A name the namespace does not have raises AttributeError, not ImportError."""
    with pytest.raises(AttributeError, match="NoSuchSink"):
        _ = spoolkit.sinks.NoSuchSink  # type: ignore[attr-defined]


def test_import_and_light_urls_load_no_driver() -> None:
    """Importing spoolkit.sinks and building stdout/jsonl sinks imports no httpx/psycopg/redis."""
    code = (
        "import sys\n"
        "from spoolkit.sinks import from_url, JsonlSink, StdoutSink\n"
        "from_url('stdout://'); from_url('jsonl:///tmp/x.jsonl')\n"
        "print(sorted({'httpx', 'psycopg', 'redis'} & set(sys.modules)))\n"
    )
    out = python_stdout(code)
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("name", "module", "extra"),
    [
        ("HttpSink", "httpx", "spoolkit[http]"),
        ("PostgresSink", "psycopg", "spoolkit[postgres]"),
        ("RedisStreamSink", "redis", "spoolkit[redis]"),
    ],
)
def test_missing_driver_names_the_extra(name: str, module: str, extra: str) -> None:
    """Without its driver, using a sink raises ImportError telling which extra to install."""
    code = (
        "import sys\n"
        f"sys.modules[{module!r}] = None\n"
        "import spoolkit.sinks\n"
        "try:\n"
        f"    spoolkit.sinks.{name}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = python_stdout(code)
    assert f"{name} needs {module}: pip install '{extra}'" in out


def test_https_url_with_options_and_passthrough_params() -> None:
    """format/gzip/timeout are sink options; other query parameters stay in the target URL."""
    sink = from_url("https://api.example.com/v1/logs?format=ndjson&gzip=true&timeout=2.5&ds=web")
    assert isinstance(sink, HttpSink)
    assert sink.url == "https://api.example.com/v1/logs?ds=web"
    assert (sink.format, sink.gzip, sink.timeout) == ("ndjson", True, 2.5)


def test_http_defaults() -> None:
    """A bare http URL gives a JSON-array, uncompressed sink with a 10 s timeout."""
    sink = from_url("http://127.0.0.1:8080/in")
    assert isinstance(sink, HttpSink)
    assert (sink.url, sink.format, sink.gzip, sink.timeout) == (
        "http://127.0.0.1:8080/in",
        "json",
        False,
        10.0,
    )


def test_jsonl_url(tmp_path: Path) -> None:
    """jsonl:///abs/path?max_bytes=&keep= builds a JsonlSink on that path."""
    sink = from_url(f"jsonl://{tmp_path}/out%20put.jsonl?max_bytes=1000&keep=3")
    assert isinstance(sink, JsonlSink)
    assert (sink.path, sink.max_bytes, sink.keep) == (f"{tmp_path}/out put.jsonl", 1000, 3)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_url_keeps_libpq_params_in_the_dsn(scheme: str) -> None:
    """table/create_table are sink options; sslmode stays in the DSN; postgres:// works too."""
    sink = from_url(f"{scheme}://u:pw@db:5432/app?table=events&create_table=yes&sslmode=disable")
    assert isinstance(sink, PostgresSink)
    assert (sink.table, sink.create_table) == ("events", True)
    assert sink._dsn == f"{scheme}://u:pw@db:5432/app?sslmode=disable"


def test_redis_url() -> None:
    """stream/maxlen/approximate are sink options; redis-py options stay in the URL."""
    sink = from_url("redis://127.0.0.1:6379/2?stream=ev&maxlen=1000&approximate=false")
    assert isinstance(sink, RedisStreamSink)
    assert (sink.stream, sink.maxlen, sink.approximate) == ("ev", 1000, False)
    kwargs = sink.client.connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["db"]) == (6379, 2)
    sink.close()


def test_stdout_url() -> None:
    """stdout:// builds a StdoutSink."""
    assert isinstance(from_url("stdout://"), StdoutSink)


def test_unknown_scheme_lists_accepted_schemes() -> None:
    """An unknown scheme raises ConfigError listing every accepted scheme."""
    with pytest.raises(ConfigError) as info:
        from_url("kafka://broker/topic")
    message = str(info.value)
    assert "'kafka'" in message
    for scheme in ("http", "https", "jsonl", "postgresql", "postgres", "redis", "stdout"):
        assert scheme in message


@pytest.mark.parametrize(
    ("url", "needed"),
    [
        ("postgresql://u@h/db", "table="),
        ("redis://h:6379/0", "stream="),
        ("redis://h:6379/0?stream=", "stream="),
    ],
)
def test_missing_required_option_names_it(url: str, needed: str) -> None:
    """A missing required option raises ConfigError naming it and the accepted ones."""
    with pytest.raises(ConfigError, match=needed) as info:
        from_url(url)
    assert "accepted" in str(info.value)


@pytest.mark.parametrize(
    ("url", "unknown"),
    [
        ("jsonl:///tmp/x.jsonl?max_byte=5", "'max_byte'"),
        ("postgresql://u@h/db?table=t&bogus=1", "'bogus'"),
        ("redis://h/0?stream=s&maxlength=5", "'maxlength'"),
        ("stdout://?pretty=1", "'pretty'"),
    ],
)
def test_unknown_options_are_named(url: str, unknown: str) -> None:
    """Options a sink does not know raise ConfigError naming them."""
    with pytest.raises(ConfigError, match=unknown):
        from_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://h/x?gzip=maybe",
        "https://h/x?timeout=0",
        "https://h/x?timeout=soon",
        "https://h/x?format=xml",
        "jsonl:///tmp/x.jsonl?max_bytes=-1",
        "jsonl:///tmp/x.jsonl?keep=two",
        "jsonl://relative/x.jsonl",
        "jsonl:///",
        "redis://h/0?stream=s&maxlen=-3",
        "postgresql://u@h/db?table=a.b.c",
        "postgresql://u@h/db?table=t&table=u",
        "stdout://somewhere",
        "nothing-here",
    ],
)
def test_bad_values_are_config_errors(url: str) -> None:
    """Malformed values, duplicated options and bad paths raise ConfigError."""
    with pytest.raises(ConfigError):
        from_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:pw-SECRET@h/db",
        "postgresql://app:pw-SECRET@h/db?table=t&bogus=1",
        "redis://:pw-SECRET@h/0?maxlen=x&stream=s",
        "https://h/x?token=pw-SECRET&gzip=maybe",
        "kafka://u:pw-SECRET@h",
    ],
)
def test_config_errors_never_show_passwords(url: str) -> None:
    """ConfigError messages use the redacted URL."""
    with pytest.raises(ConfigError) as info:
        from_url(url)
    assert "pw-SECRET" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://u:pw-SECRET@h/x?api_key=pw-SECRET",
        "postgresql://u:pw-SECRET@h/db?table=t",
        "redis://u:pw-SECRET@h:6379/0?stream=s",
    ],
)
def test_sink_reprs_never_show_passwords(url: str) -> None:
    """repr() of a sink built from a URL holding credentials masks them."""
    sink = from_url(url)
    assert "pw-SECRET" not in repr(sink)
    assert "***" in repr(sink)
    getattr(sink, "close", lambda: None)()


def test_syslog_and_otlp_urls_build_their_sinks() -> None:
    """syslog+tcp:// and otlp+http:// URLs give a SyslogSink and an OtlpLogSink with the
    given port and the OTLP logs endpoint; an unknown syslog option is a ConfigError."""
    from spoolkit.sinks.otlp import OtlpLogSink
    from spoolkit.sinks.syslog import SyslogSink

    syslog = from_url("syslog+tcp://h:1514?app_name=a")
    assert isinstance(syslog, SyslogSink)
    assert repr(syslog) == "SyslogSink('syslog+tcp://h:1514')"
    otlp = from_url("otlp+http://c:4318")
    assert isinstance(otlp, OtlpLogSink)
    assert repr(otlp) == "OtlpLogSink('http://c:4318/v1/logs')"
    with pytest.raises(ConfigError, match="app_name"):
        from_url("syslog+tcp://h:1514?bogus=1")


def test_amqp_and_nats_urls_build_their_sinks() -> None:
    """amqp:// gives an AmqpSink whose repr masks the password; nats:// a NatsSink with its
    subject and stream, and a nats URL without subject= is a ConfigError naming it."""
    from spoolkit.sinks import AmqpSink, NatsSink

    amqp = from_url("amqp://u:pw@h/%2F?routing_key=q")
    assert isinstance(amqp, AmqpSink)
    assert "pw" not in repr(amqp)
    nats = from_url("nats://h:4222?subject=a.b&stream=S")
    assert isinstance(nats, NatsSink)
    assert (nats.subject, nats.stream) == ("a.b", "S")
    with pytest.raises(ConfigError, match="subject"):
        from_url("nats://h:4222")
