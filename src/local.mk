libwpsnap_la_SOURCES += \
	src/ctx.c \
	src/log.h \
	src/snapshot.c \
	src/checkpoint.c \
	src/chain.c
