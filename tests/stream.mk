# tests of the stream module
