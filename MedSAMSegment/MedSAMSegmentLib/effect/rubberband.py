"""The box being drawn in a slice view: a yellow rectangle drawn by a 2D VTK actor.

VTK only (no Qt), so it is tested without Slicer. The rectangle is kept in world RAS once drawn and
mapped to the view's display coordinates on every view change, so pan and zoom move it with the
image; on another slice it is hidden, because the prompt belongs to the slice it was drawn on.
"""

import vtk

COLOR = (1.0, 0.85, 0.0)
LINE_WIDTH = 2
SLICE_TOLERANCE_MM = 0.01  # slice offsets closer than this are the same slice


class RubberBand:
    """One slice view's rectangle (display xy while dragging, world RAS once drawn)."""

    def __init__(self):
        self.points = vtk.vtkPoints()
        self.points.SetNumberOfPoints(4)
        lines = vtk.vtkCellArray()
        lines.InsertNextCell(5)
        for index in (0, 1, 2, 3, 0):
            lines.InsertCellPoint(index)
        self.polyData = vtk.vtkPolyData()
        self.polyData.SetPoints(self.points)
        self.polyData.SetLines(lines)
        mapper = vtk.vtkPolyDataMapper2D()
        mapper.SetInputData(self.polyData)
        self.actor = vtk.vtkActor2D()
        self.actor.SetMapper(mapper)
        self.actor.GetProperty().SetColor(*COLOR)
        self.actor.GetProperty().SetLineWidth(LINE_WIDTH)
        self.actor.VisibilityOff()
        self.startXy = None  # set while the mouse button is down
        self.rasCorners = None  # the 4 corners (world RAS) of the finished rectangle
        self.sliceOffset = None  # slice offset (mm) of the view it was drawn in

    @property
    def dragging(self):
        return self.startXy is not None

    def start(self, xy):
        self.startXy = tuple(xy)
        self.rasCorners = None
        self.setXy(xy, xy)

    def setXy(self, xyA, xyB):
        """Show the axis-aligned display rectangle with opposite corners xyA and xyB."""
        (x0, y0), (x1, y1) = xyA, xyB
        for index, (x, y) in enumerate(((x0, y0), (x1, y0), (x1, y1), (x0, y1))):
            self.points.SetPoint(index, x, y, 0.0)
        self.points.Modified()
        self.actor.VisibilityOn()

    def displayCorners(self, xyEnd):
        """The rectangle's four display corners, in the order setXy draws them."""
        (x0, y0), (x1, y1) = self.startXy, xyEnd
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]

    def finish(self, rasCorners, sliceOffset):
        """Keep the finished rectangle in world coordinates."""
        self.startXy = None
        self.rasCorners = [tuple(c) for c in rasCorners]
        self.sliceOffset = sliceOffset

    def clear(self):
        self.startXy = None
        self.rasCorners = None
        self.sliceOffset = None
        self.actor.VisibilityOff()

    def reposition(self, rasToXy, sliceOffset):
        """Map the kept rectangle into the view again (after pan, zoom or a slice change).
        rasToXy(ras) -> (x, y). Returns whether it is visible."""
        if self.dragging:
            return True
        visible = self.rasCorners is not None and abs(sliceOffset - self.sliceOffset) < SLICE_TOLERANCE_MM
        if visible:
            for index, ras in enumerate(self.rasCorners):
                x, y = rasToXy(ras)
                self.points.SetPoint(index, x, y, 0.0)
            self.points.Modified()
        self.actor.SetVisibility(visible)
        return visible
