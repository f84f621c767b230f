"""``python -m llmbuilder_cli`` runs the same CLI as the ``llmbuilder`` command."""

from .entry import run

if __name__ == "__main__":
    run()
