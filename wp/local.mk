libwpsnap_priv_la_SOURCES += \
	wp/compat.h \
	wp/uffd.c \
	wp/uffd.h \
	wp/pagemap.c \
	wp/pagemap.h \
	wp/dirty.c \
	wp/dirty.h \
	wp/regions.c \
	wp/engine.c \
	wp/engine.h \
	wp/histo.h \
	wp/ftrace.h
