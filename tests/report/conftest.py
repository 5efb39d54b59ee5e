"""The report tests render HTML in Debian's headless Chromium (make report-tools installs it,
with Graphviz and ChromeDriver; make test-report runs them)."""
