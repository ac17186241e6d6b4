# owned by the stream module
libwpsnap_la_SOURCES += \
	stream/img_writer.h
