"""Reading and writing pixels, geometry and shot datasets."""
