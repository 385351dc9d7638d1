"""HTTP: routes (app) and the server that carries them."""
