"""Put the working directory's `conf/` (or $RERANK_SWEEPS_CONF) on rerank_sweeps' search path.

A search-path plugin rather than `hydra.searchpath` in the primary config: the plugin is seen
by every way Hydra composes (the app, `--help`, and the compose API our preflight validates
with), so `conf/experiment/mine.yaml` is an option everywhere, listed and checked like the
packaged ones. It comes after the package's configs: a packaged name (config.yaml,
data/wordnet.yaml) stays the package's, so an unrelated conf/config.yaml in the working
directory cannot replace our primary config. Other Hydra apps are left alone.
"""

import os

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin

# The package's configs, as the app (a file path) and the compose API (a module) name them.
PACKAGE_CONF = ("pkg://rerank_sweeps.conf", "rerank_sweeps/conf")
ENV = "RERANK_SWEEPS_CONF"


def user_conf_dir() -> str:
    """The user's config folder: $RERANK_SWEEPS_CONF, else ./conf (relative to the cwd)."""
    return os.path.abspath(os.environ.get(ENV) or "conf")


class RerankSweepsUserConf(SearchPathPlugin):
    """Adds the user's config folder right after rerank_sweeps' packaged configs."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Prepend `file://<user conf>` when the search path is rerank_sweeps' own."""
        ours = [
            element
            for element in search_path.get_path()
            if element.provider == "main" and element.path.rstrip("/").endswith(PACKAGE_CONF)
        ]
        if not ours:
            return
        search_path.append(
            provider="rerank_sweeps-user",
            path=f"file://{user_conf_dir()}",
            anchor=SearchPathQuery(provider="main", path=ours[0].path),
        )
