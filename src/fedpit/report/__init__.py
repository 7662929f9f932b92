"""Reports from run directories: collect result files, plot them, render HTML and Markdown."""
