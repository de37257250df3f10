"""regedu.plot: what the notebooks' figures show (slices, field components, colour bars, legends)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from regedu import plot  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_view_2d_3d_and_channel():
    x = torch.arange(2 * 2 * 4 * 5, dtype=torch.float32).reshape(2, 2, 4, 5)
    np.testing.assert_array_equal(plot.view(x), x[0, 0].numpy())
    np.testing.assert_array_equal(plot.view(x, channel=1), x[0, 1].numpy())
    v = torch.rand(1, 1, 6, 4, 5)
    np.testing.assert_array_equal(plot.view(v), v[0, 0, 3].numpy())
    np.testing.assert_array_equal(plot.view(v, index=1), v[0, 0, 1].numpy())
    a = np.ones((3, 4))
    assert plot.view(a) is a


def test_view_errors_name_the_argument():
    with pytest.raises(ValueError, match="view: x must be"):
        plot.view(torch.zeros(3, 4, 5))
    with pytest.raises(ValueError, match="channel"):
        plot.view(torch.zeros(1, 1, 4, 4), channel=1)
    with pytest.raises(TypeError, match="view: x must be a torch.Tensor"):
        plot.view([[1, 2]])


def test_view_dvf_in_plane_components():
    u = torch.randn(1, 2, 5, 6)
    np.testing.assert_array_equal(plot.view_dvf(u), u[0].numpy())
    u3 = torch.randn(1, 3, 4, 5, 6)
    np.testing.assert_array_equal(plot.view_dvf(u3), u3[0, 1:, 2].numpy())   # rows and columns of the middle slice
    with pytest.raises(ValueError, match="view_dvf: u must be"):
        plot.view_dvf(torch.zeros(1, 3, 5, 6))                               # 3 channels for a 2D field


def test_signed_panel_is_symmetric_with_a_colour_bar():
    fig, ax = plt.subplots()
    d = torch.zeros(1, 1, 8, 8)
    d[..., 0, 0], d[..., 1, 1] = 0.5, -2.0
    im = plot.imshow(ax, d, "difference", kind="signed", unit="intensity")
    assert im.get_clim() == (-2.0, 2.0)                # white is zero
    assert im.get_cmap().name == "RdBu_r"
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "intensity"   # the colour bar, labelled


def test_image_panel_has_no_colour_bar_but_scalar_has():
    fig, ax = plt.subplots(1, 2)
    plot.imshow(ax[0], torch.rand(1, 1, 4, 4), "image")
    assert len(fig.axes) == 2
    plot.imshow(ax[1], torch.rand(1, 1, 4, 4), "error", kind="scalar")
    assert len(fig.axes) == 3
    with pytest.raises(ValueError, match="kind must be one of"):
        plot.imshow(ax[0], torch.rand(1, 1, 4, 4), kind="rainbow")


def test_label_map_has_a_legend_naming_the_labels():
    fig, ax = plt.subplots()
    labels = torch.zeros(1, 1, 6, 6, dtype=torch.int64)
    labels[..., :2, :] = 1
    labels[..., 4:, :] = 3
    labels[..., 3, 3] = 7
    plot.labelshow(ax, labels, "labels")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["CSF", "white matter", "label 7"]       # only labels present, background left out
    plot.labelshow(ax, labels, names={1: "liver", 3: "kidney", 7: "tumour"}, background=True)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["label 0", "liver", "kidney", "tumour"]
    with pytest.raises(ValueError, match="labelshow: labels must be integers"):
        plot.labelshow(ax, labels - 1)


def test_contours_legend():
    fig, ax = plt.subplots()
    labels = torch.zeros(1, 1, 10, 10)
    labels[..., 2:5, 2:5] = 2
    plot.contours(ax, labels)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["grey matter"]


def test_arrows_draw_the_field_with_a_key():
    fig, ax = plt.subplots()
    u = torch.zeros(1, 2, 8, 8)
    u[0, 0] = 2.0    # 2 voxels down (rows)
    u[0, 1] = -1.0   # 1 voxel left (columns)
    q = plot.arrows(ax, u, image=torch.rand(1, 1, 8, 8), step=4, gain=2)
    np.testing.assert_allclose(q.U, -1.0)                # x component of the arrow = column displacement
    np.testing.assert_allclose(q.V, 2.0)
    assert q.scale == pytest.approx(0.5)                 # drawn twice their length
    keys = [c for c in ax.get_children() if type(c).__name__ == "QuiverKey"]
    assert len(keys) == 1 and keys[0].U == 2.0 and "x2" in keys[0].text.get_text()


def test_grid_lines_follow_phi():
    fig, ax = plt.subplots()
    u = torch.zeros(1, 2, 7, 7)
    u[0, 0] = 1.5
    plot.grid(ax, u, step=3)
    first_row = ax.lines[0]
    np.testing.assert_allclose(first_row.get_ydata(), 1.5)        # row 0 of the fixed grid sits at phi = 0 + 1.5
    np.testing.assert_allclose(first_row.get_xdata(), np.arange(7))


def test_panels_kinds_and_errors():
    imgs = [torch.rand(1, 1, 4, 4), torch.randn(1, 1, 4, 4), torch.randint(0, 4, (1, 1, 4, 4))]
    fig = plot.panels(imgs, ["a", "b", "c"], kinds=["image", "signed", "labels"])
    assert len(fig.axes) == 4                                     # three panels, one colour bar
    assert fig.axes[2].get_legend() is not None
    assert [a.get_title() for a in fig.axes[:3]] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="panels: titles must have one entry per image"):
        plot.panels(imgs, ["a"])
    with pytest.raises(ValueError, match="at least one"):
        plot.panels([], [])


def test_as_batch():
    item = {"fixed": torch.zeros(1, 4, 4), "name": "pair 0"}
    b = plot.as_batch(item, "cpu")
    assert b["fixed"].shape == (1, 1, 4, 4) and b["name"] == "pair 0"
    with pytest.raises(TypeError, match="as_batch: item must be a dict"):
        plot.as_batch(torch.zeros(2))
