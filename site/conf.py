# Sphinx configuration of the course's site; python -m course_utils.site copies it into the generated sources.
# The notebooks are committed executed, so nothing runs; every script comes from _static/vendor (no CDN).
project = "CNN Architectures, from NumPy to GPU PyTorch"
author = "the course's authors"
copyright = "the course's authors, MIT licence"

extensions = ["myst_nb"]
myst_enable_extensions = ["dollarmath", "amsmath"]  # $...$ and $$...$$ in the notebooks' Markdown
nb_execution_mode = "off"
exclude_patterns = ["**.ipynb_checkpoints"]

html_theme = "alabaster"
html_static_path = ["_static"]
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {"page_width": "1200px", "sidebar_width": "240px"}

# MathJax 3 and the ipywidgets HTML manager, copied from site/node_modules (see site/package.json)
mathjax_path = "vendor/mathjax/tex-mml-chtml.js"
nb_ipywidgets_js = {
    "vendor/require.js": {},
    "vendor/html-manager/embed-amd.js": {},
}
