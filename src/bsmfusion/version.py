"""The package version, in a module of its own so that lower layers (bundle metadata) read it without importing the
package's public API (`bsmfusion/__init__`, which sits on top of every layer)."""
__version__ = "0.1.0"
