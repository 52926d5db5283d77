"""The edgepack command line: one module per subcommand, each calling one public function."""
