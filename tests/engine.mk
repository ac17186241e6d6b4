# tests of the engine module
