"""`pytest -p tests.throwaway.plugin`: the throw-away vendor registered for the whole run."""

from tests.throwaway import install

install()
