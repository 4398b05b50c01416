"""The bundled demo: a synthetic audio-visual world, tiny codecs and a tiny model trained on it."""
