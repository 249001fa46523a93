"""Command-line skins: argparse → one library call. No logic lives here."""
