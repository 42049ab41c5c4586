"""mkdocs-gen-files script (mkdocs.yml): writes the generated reference pages into the site being
built, so they are made from the code of the commit the docs are built from."""

import sys
from pathlib import Path

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).parent))

from docs_reference import cli_markdown, config_markdown  # noqa: E402

for name, text in (("reference/cli.md", cli_markdown()), ("reference/config.md", config_markdown())):
    with mkdocs_gen_files.open(name, "w") as f:
        f.write(text)
