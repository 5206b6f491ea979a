"""Stage graph, content-addressed cache and run directories."""
