"""Output in perf's formats: `perf stat -I` lines as tools/perf/util/stat-display.c prints them.

Source: tools/perf/util/stat-display.c in gregkh/linux at 6b3b22f2afaf (a 2025/26 v6.1x perf; the
same output code as googleprodkernel/linux-perf 2ac322f528ad), "SD" below.  One line is what
print_counter_aggrdata() writes for one counter: prepare_timestamp(), then printout() ->
aggr_printout() (the -A CPU column), print_counter_value_{std,csv,json}(), print_running_*() and
the metric from stat-shadow.c perf_stat__print_shadow_stats().  A kprobe/tracepoint counter has no
metric (unless task-clock/cpu-clock is counted too, which adds "/sec"), so print_metric() gets
unit=NULL.  kvmsim's counters always run: run time = enabled time, percentage running 100.00.
evsel->unit is "" unless set (evsel.c evsel__init), so the unit field is always printed.
"""

from __future__ import annotations

from . import _spec
from ._names import perf_name as event_name

UNITS = {c.name: c.unit for c in _spec.COUNTERS if c.unit}

# Widths (stat-display.c #defines, builtin-stat.c stat_config.unit_width = 4 = strlen("unit"),
# widened to the longest unit; ours are "" and "ns").
COUNTS_LEN, UNIT_WIDTH, EVNAME_LEN, METRIC_LEN, INTERVAL_LEN, CPU_LEN = 18, 4, 32, 38, 16, 6

# SD print_header_interval_std(): "#%*s" INTERVAL_LEN-1 "time", [-A: " %-*s" 6 "cpu"], then
# " %*s %*s events" COUNTS_LEN "counts", unit_width "unit".  -x and -j print no header
# (print_header_csv/json print only for --metric-only).
INTERVAL_HEADER = "#           time             counts unit events"
INTERVAL_HEADER_CPU = "#           time cpu                counts unit events"
EMPTY_METRIC = " " * METRIC_LEN  # print_metric_std(unit=NULL): "%-*s", METRIC_LEN, ""


def timestamp(seconds_ns: int) -> str:
    """perf's `%6lu.%09lu` from integer nanoseconds."""
    return "%6lu.%09lu" % divmod(seconds_ns, 1_000_000_000)


def interval_line(t_ns: int, count: int, counter: str, vcpu: int | None = None, *,
                  metric_pad: bool = False) -> str:
    """One `perf stat -I` line (`-A` with vcpu): time, [CPU<n>], count in 18 columns, unit, event.

    SD prepare_timestamp() "%6lu.%09lu ", print_aggr_id_std() AGGR_NONE "CPU%-*d " (width 6-3),
    print_counter_value_std() "%*.0f " COUNTS_LEN (as --no-big-num: no thousands separators),
    "%-*s " unit_width, "%-*s" EVNAME_LEN.  perf then pads the empty metric column with 38 spaces
    (EMPTY_METRIC); kvmsim leaves them off unless metric_pad.
    """
    cpu = "" if vcpu is None else "CPU%-*d " % (CPU_LEN - 3, vcpu)
    line = f"{timestamp(t_ns)} {cpu}{count:>{COUNTS_LEN}} {UNITS.get(counter, ''):<{UNIT_WIDTH}} "\
           f"{event_name(counter):<{EVNAME_LEN}}"
    return line + EMPTY_METRIC if metric_pad else line


def csv_line(t_ns: int, count: int, counter: str, interval_ns: int, sep: str = ",",
             vcpu: int | None = None) -> str:
    """One `perf stat -I -x SEP` line (`-A` with vcpu).

    SD fields: time "%lu.%09lu" (prepare_timestamp), [CPU<n> (print_aggr_id_csv)], count "%.0f",
    unit, event (print_counter_value_csv), run time in ns, "%.2f" percentage running
    (print_running_csv), then the empty metric value and metric unit (print_metric_csv, unit=NULL:
    two separators).  `-x '\\t'` means a tab (builtin-stat.c cmd_stat).  interval_ns is printed as
    the run time: per CPU (-A) that is the interval; a host-wide `-a` total sums it over CPUs.
    """
    sep = "\t" if sep == "\\t" else sep
    fields = ["%lu.%09lu" % divmod(t_ns, 1_000_000_000)]
    if vcpu is not None:
        fields.append(f"CPU{vcpu}")
    fields += [str(count), UNITS.get(counter, ""), event_name(counter), str(interval_ns), "100.00",
               "", ""]
    return sep.join(fields)


def counter_value(count: int) -> str:
    """perf's "%f" of a count, exact for every int: "%f" of a count past 2**53 (ns.* summed
    over many vCPUs) would print a float's digits."""
    return f"{int(count)}.000000"


def json_line(t_ns: int, count: int, counter: str, interval_ns: int,
              vcpu: int | None = None) -> str:
    """One `perf stat -I -j` line (`-A` with vcpu): `"key" : value` items joined by ", ".

    SD json_out() separates the items: "interval" unquoted %lu.%09lu (prepare_timestamp),
    ["cpu" : "<n>" (print_aggr_id_json)], "counter-value" quoted "%f", "unit", "event"
    (print_counter_value_json), "event-runtime" %lu, "pcnt-running" %.2f (print_running_json);
    no metric-value/metric-unit when the unit is NULL (print_metric_json, which adds the "}").
    perf before v6.13 ended such lines `, "metric-value" : "0.000000", "metric-unit" : "(null)"}`
    (Ian Rogers, "perf stat: Drop metric-unit if unit is NULL", and James Clark's json_out() fix).
    """
    items = ["\"interval\" : %lu.%09lu" % divmod(t_ns, 1_000_000_000)]
    if vcpu is not None:
        items.append(f'"cpu" : "{vcpu}"')
    items += [f'"counter-value" : "{counter_value(count)}"', f'"unit" : "{UNITS.get(counter, "")}"',
              f'"event" : "{event_name(counter)}"', f'"event-runtime" : {interval_ns}',
              '"pcnt-running" : 100.00']
    return "{" + ", ".join(items) + "}"
