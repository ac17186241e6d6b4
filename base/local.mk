# base/: the ground floor. Helpers every floor above may use (the library,
# the daemon, the tools), depending on libc alone and on nothing in src/.
libwpsnap_la_SOURCES += \
	base/deadline.h \
	base/procmaps.c \
	base/procmaps.h
