libwpsnap_la_SOURCES += \
	src/bits.h \
	src/clock.h \
	src/ctx.c \
	src/log.h \
	src/snapshot.c \
	src/checkpoint.c \
	src/ckpt_session.c \
	src/chain.c
