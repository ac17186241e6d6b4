/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Deadlines: a timeout in milliseconds turned into an absolute
 * CLOCK_MONOTONIC time once, and what is left of it asked for as often as
 * a wait loop wakes up. An absolute deadline does not stretch when a wait
 * is interrupted and restarted (a signal, a spurious wakeup, a line read
 * that did not complete the reply), which a relative timeout passed again
 * on every round would.
 *
 * The clock is CLOCK_MONOTONIC, so a condition variable waited on with
 * pthread_cond_timedwait() must be created with
 * pthread_condattr_setclock(CLOCK_MONOTONIC).
 *
 * Ground floor (base/): header-only, depends on libc alone, no exported
 * symbol. Prefix wps_deadline_.
 */
#ifndef WPS_BASE_DEADLINE_H
#define WPS_BASE_DEADLINE_H

#include <limits.h>
#include <stdint.h>
#include <time.h>

/* The absolute CLOCK_MONOTONIC time ms milliseconds from now. */
static inline struct timespec wps_deadline_from_ms(uint64_t ms)
{
	struct timespec dl;

	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += (time_t)(ms / 1000);
	dl.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	return dl;
}

/* Nanoseconds left until dl; 0 once it has passed. */
static inline uint64_t wps_deadline_left_ns(const struct timespec *dl)
{
	struct timespec now;
	int64_t left;

	clock_gettime(CLOCK_MONOTONIC, &now);
	left = ((int64_t)dl->tv_sec - (int64_t)now.tv_sec) * 1000000000LL +
	       (dl->tv_nsec - now.tv_nsec);
	return left > 0 ? (uint64_t)left : 0;
}

/* What is left as a relative timespec (for sigtimedwait, nanosleep). */
static inline struct timespec wps_deadline_left(const struct timespec *dl)
{
	uint64_t ns = wps_deadline_left_ns(dl);

	return (struct timespec){ (time_t)(ns / 1000000000ull),
				  (long)(ns % 1000000000ull) };
}

/*
 * What is left as a poll() timeout: milliseconds rounded up, so that a
 * poll does not return just before the deadline and spin on a 0 ms
 * timeout; 0 exactly when the deadline has passed; at most INT_MAX.
 */
static inline int wps_deadline_poll_ms(const struct timespec *dl)
{
	uint64_t ms = (wps_deadline_left_ns(dl) + 999999) / 1000000;

	return ms > INT_MAX ? INT_MAX : (int)ms;
}

#endif /* WPS_BASE_DEADLINE_H */
