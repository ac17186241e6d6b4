# base/: the ground floor. Helpers every floor above may use (the library,
# the daemon, the tools): the context and its logging, the monotonic clock,
# deadlines, bitmap runs, the /proc/PID/maps reader, running a helper
# program. They depend on libc alone and on nothing in src/, wp/ or stream/.
libwpsnap_priv_la_SOURCES += \
	base/bits.h \
	base/clock.h \
	base/ctx.c \
	base/deadline.h \
	base/log.h \
	base/procmaps.c \
	base/procmaps.h \
	base/spawn.c \
	base/spawn.h
