"""kvmsim._perf_format against perf's own output, field by field.

Reference lines are copied from perf sources, tests and patch mails:

* SD = tools/perf/util/stat-display.c, gregkh/linux 6b3b22f2afaf (googleprodkernel/linux-perf
  2ac322f528ad prints the same): the C format strings re-applied below with Python's `%`.
* JSON_LINT / CSV_LINT = torvalds/linux tools/perf/tests/shell/lib/perf_json_output_lint.py
  (3ab7ae8e07f8) and perf_csv_output_lint.py (78dcf9434c22): the checks perf's test suite runs.
* Real output lines quoted in perf patch mails on linux-kernel (cited at each constant).
"""

import json

import pytest

from kvmsim._perf_format import (INTERVAL_HEADER, INTERVAL_HEADER_CPU, csv_line, event_name,
                                interval_line, json_line, timestamp)

CANCEL = "canceled_vmenters"          # -> probe:vmx_cancel_injection, unit ""
NS = "ns.guest"                       # -> kvmsim:ns.guest, unit "ns"

# `perf stat -a -M topdownl1 -x, -I 1000`, a counter line without metric: Ian Rogers,
# "[PATCH v2 6/8] perf stat: Display metric threshold value in CSV output", LKML 2024-10-10,
# <20241010012135.1272535-7-irogers@google.com>.
PERF_CSV = "1.000103288,476781750,,topdown-retiring,16029302700,100.00,,"

# `perf stat -a -M topdownl1 -j -I 1000`: Ian Rogers, "perf stat: Drop metric-unit if unit is
# NULL", LKML 2024-10 (the tail from ', "metric-value"' on is what that patch removes).
PERF_JSON_OLD = ('{"interval" : 11.127757275, "counter-value" : "85715898.000000", "unit" : "", '
                 '"event" : "IDQ.MITE_UOPS", "event-runtime" : 988376123, "pcnt-running" : 100.00, '
                 '"metric-value" : "0.000000", "metric-unit" : "(null)"}')
# ... and the line without metric after it: James Clark, "[PATCH v2 2/2] perf stat: Also hide
# metric-units from JSON when event didn't run", LKML 2024-10-30 ("After:").
PERF_JSON_NO_METRIC = ('{"counter-value" : "<not counted>", "unit" : "", "event" : '
                       '"cpu_atom/branch-misses/", "event-runtime" : 0, "pcnt-running" : 0.00}')
# `perf stat -a -j -I 1000`: Ian Rogers, "perf stat: Add metric-threshold to json output", 2024-10.
PERF_JSON_INTERVAL_PREFIX = '{"interval" : 1.001089747, "counter-value" : "16045.281449", '

T = 1_000_103_288          # the timestamp of PERF_CSV
RUN = 16_029_302_700       # its run time (16 CPUs aggregated)


# ---------------------------------------------------------------- std (human) layout

def perf_std(t_ns, count, unit, name, cpu=None):
    """The line SD builds: prepare_timestamp, print_aggr_id_std, print_counter_value_std."""
    s = "%6lu.%09lu " % divmod(t_ns, 10**9)
    if cpu is not None:
        s += "CPU%-*d " % (6 - 3, cpu)                    # aggr_header_lens[AGGR_NONE] - 3
    return s + "%*.0f " % (18, count) + "%-*s " % (4, unit) + "%-*s" % (32, name)


@pytest.mark.parametrize("counter, unit", [(CANCEL, ""), (NS, "ns")])
@pytest.mark.parametrize("cpu", [None, 0, 7, 123])
def test_std_line_is_perfs_format(counter, unit, cpu):
    line = interval_line(T, 476781750, counter, cpu)
    assert line == perf_std(T, 476781750, unit, event_name(counter), cpu)


def test_std_line_fields():
    line = interval_line(T, 476781750, CANCEL)
    assert line[:16] == "     1.000103288"                 # %6lu.%09lu
    assert line[16] == " " and line[17:35] == "         476781750"   # COUNTS_LEN 18
    assert line[35:41] == "      "                          # " " + unit "%-4s" + " "
    assert line[41:] == "probe:vmx_cancel_injection      "  # EVNAME_LEN 32


def test_std_cpu_line_fields():
    line = interval_line(T, 5, CANCEL, vcpu=3)
    assert line[:17] == "     1.000103288 "
    assert line[17:24] == "CPU3   "                         # "CPU%-3d "
    assert line[24:42] == " " * 17 + "5"


def test_std_metric_pad_is_perfs_empty_metric():
    # print_metric_std(unit=NULL): "%-*s", METRIC_LEN (38), "".
    assert interval_line(T, 1, CANCEL, metric_pad=True) == interval_line(T, 1, CANCEL) + " " * 38


def test_headers_are_perfs_and_line_up():
    # SD print_header_interval_std.
    assert INTERVAL_HEADER == "#%*s" % (15, "time") + " %*s %*s events" % (18, "counts", 4, "unit")
    assert INTERVAL_HEADER_CPU == ("#%*s %-*s" % (15, "time", 6, "cpu")
                                   + " %*s %*s events" % (18, "counts", 4, "unit"))
    for header, cpu in ((INTERVAL_HEADER, None), (INTERVAL_HEADER_CPU, 2)):
        line = interval_line(T, 476781750, CANCEL, cpu)
        assert header.index("counts") + len("counts") == line.index("476781750") + 9
        assert header.index("events") == line.index("probe:")


def test_timestamp_std_width():
    assert timestamp(0) == "     0.000000000"
    assert timestamp(123_456_000_000_001) == "123456.000000001"


# ---------------------------------------------------------------- CSV (-x SEP)

def test_csv_matches_perf_line():
    ours = csv_line(T, 476781750, CANCEL, RUN)
    assert ours == PERF_CSV.replace("topdown-retiring", "probe:vmx_cancel_injection")


def test_csv_fields_in_perf_order():
    # perf-stat.txt CSV FORMAT: [time], [CPU], value, unit, event, run time, % running,
    # metric value, metric unit.
    theirs = PERF_CSV.split(",")
    ours = csv_line(T, 476781750, NS, RUN).split(",")
    assert len(ours) == len(theirs) == 8
    assert ours[0] == theirs[0] == "1.000103288"          # "%lu.%09lu", no padding
    assert ours[1] == theirs[1] == "476781750"            # "%.0f"
    assert ours[2] == "ns" and theirs[2] == ""            # unit or empty
    assert ours[3] == "kvmsim:ns.guest"
    assert ours[4] == theirs[4] == "16029302700"          # run time, ns
    assert ours[5] == theirs[5] == "100.00"               # "%.2f"
    assert ours[6:] == theirs[6:] == ["", ""]             # no metric


@pytest.mark.parametrize("sep", [",", ";", "@", "\t"])
def test_csv_separator_counts(sep):
    # CSV_LINT --interval: 7 separators; --system-wide-no-aggr (-A) adds the CPU column.
    assert csv_line(T, 1, CANCEL, RUN, sep).count(sep) == 7
    assert csv_line(T, 1, CANCEL, RUN, sep, vcpu=2).count(sep) == 8


def test_csv_tab_escape_and_short_timestamp():
    assert csv_line(5_000_000_007, 1, CANCEL, 10, "\\t").split("\t")[:2] == ["5.000000007", "1"]


def test_csv_cpu_column():
    # SD print_aggr_id_csv AGGR_NONE: "CPU%d" + sep, right after the timestamp.
    line = csv_line(T, 476781750, CANCEL, 1_000_000_000, ";", vcpu=11)
    assert line == "1.000103288;CPU11;476781750;;probe:vmx_cancel_injection;1000000000;100.00;;"


# ---------------------------------------------------------------- JSON (-j)

def test_json_matches_perf_line():
    ours = json_line(11_127_757_275, 85715898, CANCEL, 988376123)
    head = PERF_JSON_OLD[:PERF_JSON_OLD.index(', "metric-value"')]
    assert ours == head.replace("IDQ.MITE_UOPS", "probe:vmx_cancel_injection") + "}"


def test_json_ends_like_perf_line_without_metric():
    tail = PERF_JSON_NO_METRIC[PERF_JSON_NO_METRIC.index('"event-runtime"'):]
    assert json_line(T, 1, CANCEL, 0).endswith(tail.replace("0.00}", "100.00}"))
    start = '{"interval" : 1.001089747, "counter-value" : "'
    assert PERF_JSON_INTERVAL_PREFIX.startswith(start)
    assert json_line(1_001_089_747, 16045, CANCEL, 1).startswith(start)


def test_json_keys_order_and_spacing():
    line = json_line(T, 476781750, NS, RUN, vcpu=4)
    assert line == ('{"interval" : 1.000103288, "cpu" : "4", "counter-value" : "476781750.000000", '
                    '"unit" : "ns", "event" : "kvmsim:ns.guest", "event-runtime" : 16029302700, '
                    '"pcnt-running" : 100.00}')
    assert list(json.loads(line)) == ["interval", "cpu", "counter-value", "unit", "event",
                                      "event-runtime", "pcnt-running"]


def isfloat(x):
    try:
        float(x)
        return True
    except ValueError:
        return False


def isint(x):
    try:
        int(x)
        return True
    except ValueError:
        return False


JSON_LINT_CHECKS = {  # JSON_LINT check_json_output(): the keys a counter line may have
    "counter-value": isfloat, "cpu": isint, "event": lambda x: True, "unit": lambda x: True,
    "event-runtime": isfloat, "interval": isfloat, "pcnt-running": isfloat,
}


@pytest.mark.parametrize("vcpu", [None, 0, 5])
def test_json_passes_perfs_linter(vcpu):
    item = json.loads(json_line(T, 3, CANCEL, RUN, vcpu))
    assert all(JSON_LINT_CHECKS[k](v) for k, v in item.items())
    # --interval expects 6 items (8 with a metric); -A adds "cpu".
    assert len(item) == (6 if vcpu is None else 7)
    # Types as perf prints them: number, quoted "%f", number, number; cpu as a string.
    assert isinstance(item["interval"], float) and isinstance(item["counter-value"], str)
    assert isinstance(item["event-runtime"], int) and isinstance(item["pcnt-running"], float)
    assert vcpu is None or item["cpu"] == str(vcpu)
