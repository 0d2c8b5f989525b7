"""The built-in search spaces (one YAML file each), shipped inside the wheel as the
package `sweeper.search_spaces` (pyproject.toml maps this folder there)."""
