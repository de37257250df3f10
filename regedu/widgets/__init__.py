"""Interactive widgets (ipywidgets 8 + matplotlib) for exploring transforms and registrations.

One line in a notebook shows a widget (the last expression of a cell displays itself)::

    from regedu.widgets import AffineExplorer
    AffineExplorer(fixed, moving)

Every widget has ``.widget`` (the ipywidgets box), ``set(**values)`` to move its controls from code,
``state()`` (the control values) and ``displayed`` (the arrays and numbers currently shown).
The figure is rendered with Agg into an ``ipywidgets.Image``, so no ipympl or other extension is
needed: ipywidgets 8 ships its JupyterLab extension.
"""

from .affine_explorer import AffineExplorer
from .dvf_explorer import DVFExplorer
from .registration_playback import RegistrationPlayback
from .similarity_landscape import SimilarityLandscape, second_contrast
from .volume_viewer import VolumeViewer

__all__ = ["AffineExplorer", "DVFExplorer", "RegistrationPlayback", "SimilarityLandscape", "VolumeViewer", "second_contrast"]
