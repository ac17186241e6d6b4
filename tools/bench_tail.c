/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap bench: the breakdown of the slowest write faults. Owns nothing
 * past a call: it copies the engine's trace (a fixed-size record, heap
 * allocated here because it is ~45 KiB), reduces it to three splits (mean
 * of all faults, mean of the slowest 0.1 %, the slowest one) and reports
 * them. Every figure is in microseconds.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/snapshot_trace.h"
#include "tools/bench_tail.h"

static void split_add(struct bench_fault_split *s, const struct wps_fault_rec *f,
		      double w)
{
	double known = (double)(f->pickup_ns + f->queue_ns + f->hint_ns +
				f->buf_ns + f->copy_ns + f->sweep_wait_ns +
				f->wake_ns);

	s->total_us += w * f->total_ns / 1e3;
	s->pickup_us += w * f->pickup_ns / 1e3;
	s->behind_us += w * f->behind_ns / 1e3;
	s->queue_us += w * f->queue_ns / 1e3;
	s->hint_us += w * f->hint_ns / 1e3;
	s->buf_us += w * f->buf_ns / 1e3;
	s->copy_us += w * f->copy_ns / 1e3;
	s->sweep_wait_us += w * f->sweep_wait_ns / 1e3;
	s->wake_us += w * f->wake_ns / 1e3;
	s->offcpu_us += w * f->offcpu_ns / 1e3;
	s->other_us += w * (f->total_ns > known ? f->total_ns - known : 0) / 1e3;
}

/* run_delay of a thread of ours in ms (NAN if unreadable); its comm into
 * name. */
static double task_delay(int tid, char *name, size_t len)
{
	char path[64];
	unsigned long long cpu, delay;
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", tid);
	f = fopen(path, "re");
	if (!f)
		return NAN;
	ok = fscanf(f, "%llu %llu", &cpu, &delay) == 2;
	fclose(f);
	if (name) {
		name[0] = 0;
		snprintf(path, sizeof(path), "/proc/self/task/%d/comm", tid);
		f = fopen(path, "re");
		if (f) {
			if (!fgets(name, (int)len, f))
				name[0] = 0;
			name[strcspn(name, "\n")] = 0;
			fclose(f);
		}
	}
	return ok ? delay / 1e6 : NAN;
}

void bench_sched_begin(struct bench_sched *s)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;

	s->nr = 0;
	if (!d)
		return;
	while ((de = readdir(d)) && s->nr < BENCH_SCHED_MAX_TASKS) {
		int tid = atoi(de->d_name);

		if (tid <= 0)
			continue;
		s->tid[s->nr] = tid;
		s->delay_ms[s->nr++] = task_delay(tid, NULL, 0);
	}
	closedir(d);
}

void bench_sched_end(const struct bench_sched *s, struct bench_tail *t)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	unsigned int i;

	t->rq_writers_ms = t->rq_other_ms = 0;
	if (!d) {
		t->rq_writers_ms = t->rq_other_ms = NAN;
		return;
	}
	while ((de = readdir(d))) {
		int tid = atoi(de->d_name);
		char name[32];
		double v, before = 0;
		bool old = false;

		if (tid <= 0)
			continue;
		v = task_delay(tid, name, sizeof(name));
		if (isnan(v))
			continue;
		for (i = 0; i < s->nr; i++)
			if (s->tid[i] == tid) {
				old = true;
				before = isnan(s->delay_ms[i]) ? v : s->delay_ms[i];
			}
		v -= before;
		if (old && tid != (int)gettid())
			t->rq_writers_ms += v;
		else
			t->rq_other_ms += v;
	}
	closedir(d);
}

int bench_tail_take(struct wps_snapshot *snap, const struct rguest_latency *lat,
		    struct bench_tail *t)
{
	struct wps_fault_trace *tr = malloc(sizeof(*tr));
	unsigned int i;
	int ret;

	/* keeps the run-queue figures bench_sched_end may have set */
	double rq[4] = { t->rq_fault_ms, t->rq_sweep_ms, t->rq_writers_ms,
			 t->rq_other_ms };

	memset(t, 0, sizeof(*t));
	t->rq_fault_ms = rq[0];
	t->rq_sweep_ms = rq[1];
	t->rq_writers_ms = rq[2];
	t->rq_other_ms = rq[3];
	if (!tr)
		return -ENOMEM;
	ret = wps_snapshot_fault_trace(snap, tr);
	if (ret) {
		free(tr);
		return ret;
	}
	t->faults = (double)tr->faults;
	/* The engine's threads are joined by now: they read their own. */
	t->rq_fault_ms = tr->fault_rq_ns / 1e6;
	t->rq_sweep_ms = tr->sweep_rq_ns / 1e6;
	t->writer_p99_us = lat->slow_writes ? lat->slow_p99_ns / 1e3 : NAN;
	t->writer_max_us = lat->writes ? lat->max_ns / 1e3 : NAN;
	t->server_p99_us = NAN;
	t->writer_minus_server_p99_us = NAN;
	t->writer_minus_server_max_us = NAN;
	if (!tr->faults || !tr->nr) {
		free(tr);
		return 0;
	}
	t->valid = true;
	split_add(&t->all, &tr->sum, 1.0 / (double)tr->faults);
	t->top = (unsigned int)((tr->faults + 999) / 1000);
	if (t->top > tr->nr)
		t->top = tr->nr;
	for (i = 0; i < t->top; i++)
		split_add(&t->slow, &tr->slow[i], 1.0 / t->top);
	split_add(&t->max, &tr->slow[0], 1.0);
	t->max.flags = tr->slow[0].flags;
	t->max.addr = (double)tr->slow[0].addr;
	/* The server's p99 at the writers' rank: the fault at rank 1 % from
	 * the top, when the kept records reach that deep. */
	if ((tr->faults + 99) / 100 <= tr->nr)
		t->server_p99_us =
			tr->slow[(tr->faults + 99) / 100 - 1].total_ns / 1e3;
	t->writer_minus_server_p99_us = t->writer_p99_us - t->server_p99_us;
	t->writer_minus_server_max_us = t->writer_max_us - t->max.total_us;
	free(tr);
	return 0;
}

static json_t *jnull_or(double v)
{
	return isnan(v) ? json_null() : json_real(v);
}

static json_t *split_json(const struct bench_fault_split *s, bool one)
{
	json_t *o = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
		"total_us", jnull_or(s->total_us), "pickup_us", jnull_or(s->pickup_us),
		"pickup_behind_us", jnull_or(s->behind_us),
		"queue_us", jnull_or(s->queue_us), "hint_us", jnull_or(s->hint_us),
		"buf_wait_us", jnull_or(s->buf_us), "copy_us", jnull_or(s->copy_us),
		"sweep_wait_us", jnull_or(s->sweep_wait_us),
		"wake_us", jnull_or(s->wake_us), "other_us", jnull_or(s->other_us),
		"fault_thread_offcpu_us", jnull_or(s->offcpu_us));

	if (o && one) {
		char a[32];

		snprintf(a, sizeof(a), "0x%llx", (unsigned long long)s->addr);
		json_object_set_new(o, "addr", json_string(a));
		json_object_set_new(o, "thp",
				    json_boolean(s->flags & WPS_FTRACE_THP));
		json_object_set_new(o, "copied",
				    json_boolean(s->flags & WPS_FTRACE_COPIED));
		json_object_set_new(o, "sweep_held",
				    json_boolean(s->flags & WPS_FTRACE_SWEEP_HELD));
		json_object_set_new(o, "after_poll",
				    json_boolean(s->flags & WPS_FTRACE_POLLED));
	}
	return o;
}

json_t *bench_tail_json(const struct bench_tail *t)
{
	if (!t->valid)
		return json_null();
	return json_pack("{s:o, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o,"
			 " s:{s:o, s:o, s:o, s:o}}",
		"faults", json_integer((json_int_t)t->faults),
		"top", (int)t->top,
		"all_mean", split_json(&t->all, false),
		"top_0_1pct_mean", split_json(&t->slow, false),
		"max", split_json(&t->max, true),
		"writer_p99_us", jnull_or(t->writer_p99_us),
		"server_p99_us", jnull_or(t->server_p99_us),
		"writer_minus_server_p99_us", jnull_or(t->writer_minus_server_p99_us),
		"writer_max_us", jnull_or(t->writer_max_us),
		"writer_minus_server_max_us", jnull_or(t->writer_minus_server_max_us),
		"run_queue_delay_ms",
		"fault_thread", jnull_or(t->rq_fault_ms),
		"sweep", jnull_or(t->rq_sweep_ms),
		"guest_writers", jnull_or(t->rq_writers_ms),
		"other", jnull_or(t->rq_other_ms));
}

static void line(const char *what, double all, double slow, double max)
{
	printf("  %-34s | %10.1f | %10.1f | %10.1f\n", what, all, slow, max);
}

void bench_tail_print(const struct bench_tail *t)
{
	if (!t->valid)
		return;
	printf("\nwhere the write faults' time went (us; the worst run; "
	       "server side, %.0f faults):\n", t->faults);
	printf("  %-34s | %10s | %10s | %10s\n", "component", "all (mean)",
	       "top 0.1%", "slowest");
	line("pickup (kernel queue, bound)", t->all.pickup_us, t->slow.pickup_us,
	     t->max.pickup_us);
	line("  of which serving earlier faults", t->all.behind_us,
	     t->slow.behind_us, t->max.behind_us);
	line("queue (batch before it)", t->all.queue_us, t->slow.queue_us,
	     t->max.queue_us);
	line("written-page hint", t->all.hint_us, t->slow.hint_us,
	     t->max.hint_us);
	line("waiting for an I/O buffer", t->all.buf_us, t->slow.buf_us,
	     t->max.buf_us);
	line("copy", t->all.copy_us, t->slow.copy_us, t->max.copy_us);
	line("waiting for the sweep's copy", t->all.sweep_wait_us,
	     t->slow.sweep_wait_us, t->max.sweep_wait_us);
	line("unprotect + wake", t->all.wake_us, t->slow.wake_us,
	     t->max.wake_us);
	line("other", t->all.other_us, t->slow.other_us, t->max.other_us);
	line("total", t->all.total_us, t->slow.total_us, t->max.total_us);
	line("  of which the fault thread off CPU", t->all.offcpu_us,
	     t->slow.offcpu_us, t->max.offcpu_us);
	printf("  writer-side p99 %.1f us vs server %.1f us: %.1f us after the "
	       "wake; writer max %.1f us vs server max: %.1f us\n",
	       t->writer_p99_us, t->server_p99_us,
	       t->writer_minus_server_p99_us, t->writer_max_us,
	       t->writer_minus_server_max_us);
	printf("  time runnable without a CPU during the run (ms): fault "
	       "thread %.1f, sweep %.1f, guest writers %.1f, other %.1f\n",
	       t->rq_fault_ms, t->rq_sweep_ms, t->rq_writers_ms,
	       t->rq_other_ms);
}
