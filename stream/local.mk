# owned by the stream module: image format v1, its writer and its reader
# (the reader's sources and the writer's outputs: a local file, or an
# NBD export via libnbd)
libwpsnap_priv_la_SOURCES += \
	stream/crc32c.c \
	stream/crc32c.h \
	stream/crc32c_table.h \
	stream/format.h \
	stream/img_writer.c \
	stream/img_writer.h \
	stream/img_out.h \
	stream/img_out_nbd.c \
	stream/img_reader.c \
	stream/img_reader_int.h \
	stream/nbd_chain.c \
	stream/nbd_chain.h \
	stream/nbd_conn.c \
	stream/nbd_conn.h \
	stream/nbd_source.c \
	stream/nbd_source.h
