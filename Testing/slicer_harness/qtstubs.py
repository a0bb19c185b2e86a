"""Minimal stand-ins for the `qt` and `ctk` modules (PythonQt), enough to build and click an effect's options.

Not a Qt emulation: widgets keep their property values, emit the few signals whose timing an
effect depends on (button click/toggle, combo index, spin box value, node combo current node,
timer timeout), and everything else is inert. Inert means: an unknown attribute or class is an
`Inert` object that can be called, connected, or- and and-ed, and returns more `Inert`, so a
rewrite of the effect's widgets does not break the harness; but it never emits anything, so a test
cannot mistake an inert stub for working behaviour.

PythonQt conventions reproduced (what an effect written for Slicer relies on):
- a Qt property is a Python attribute (`button.checked = True`, `label.text`); its setter method
  (`setChecked`) and `isXxx()` getter also work;
- signals connect by signature string (`widget.connect("clicked()", slot)`) or as attributes
  (`widget.clicked.connect(slot)`); slots get as many arguments as they accept;
- `blockSignals(True)` returns the previous state and silences the object's signals.
"""

import inspect
import re
import types

from . import threadcheck


class Inert:
    """Anything an effect may touch that the harness does not model: absorbs every use."""

    def __init__(self, name="inert"):
        object.__setattr__(self, "_name", name)

    def __repr__(self):
        return f"<Inert {self._name}>"

    def __call__(self, *args, **kwargs):
        return Inert(self._name + "()")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Inert(f"{self._name}.{name}")

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)

    def __bool__(self):
        return False

    def __iter__(self):
        return iter(())

    def __int__(self):
        return 0

    def __or__(self, other):
        return self

    __ror__ = __and__ = __rand__ = __or__

    def __invert__(self):
        return self

    def connect(self, *args):
        return True

    def disconnect(self, *args):
        return True


def _signalName(signature):
    """"toggled(bool)" -> "toggled"; a name without parentheses is returned as is."""
    return signature.split("(", 1)[0].strip()


def _call(slot, args):
    """Call a slot with as many of the signal's arguments as it accepts (PythonQt does the same)."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return slot(*args)
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return slot(*args)
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return slot(*args[: len(positional)])


class BoundSignal:
    def __init__(self, owner, name):
        self._owner, self._name = owner, name

    def connect(self, slot):
        self._owner.connect(self._name, slot)

    def disconnect(self, slot=None):
        self._owner.disconnect(self._name, slot)

    def emit(self, *args):
        self._owner.emit(self._name, *args)


class _StubClass(type):
    """Unknown class attributes (enums such as ctkPathLineEdit.Dirs, QSizePolicy.Expanding) are inert."""

    def __getattr__(cls, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return Inert(f"{cls.__name__}.{name}")


class QObject(metaclass=_StubClass):
    """Base of every stub widget: properties as attributes, signals by name, inert unknowns."""

    SIGNALS = ("destroyed", "objectNameChanged")
    DEFAULTS = {"objectName": "", "enabled": True, "visible": True, "toolTip": "", "parent": None}

    def __init__(self, *args, **kwargs):
        object.__setattr__(self, "_slots", {})
        object.__setattr__(self, "_blocked", False)
        object.__setattr__(self, "_children", [])
        object.__setattr__(self, "_properties", {})
        for klass in reversed(type(self).__mro__):
            self._properties.update(getattr(klass, "DEFAULTS", {}))
        if args and isinstance(args[0], str) and "text" in self._properties:
            self._properties["text"] = args[0]
        elif args and isinstance(args[0], QObject):
            self._properties["parent"] = args[0]
        for name, value in kwargs.items():
            setattr(self, name, value)

    @classmethod
    def _signals(cls):
        names = set()
        for klass in cls.__mro__:
            names.update(getattr(klass, "SIGNALS", ()))
        return names

    # -- signals ------------------------------------------------------------------------------------
    def connect(self, signal, slot):
        self._slots.setdefault(_signalName(signal), []).append((signal, slot))
        return True

    def disconnect(self, signal, slot=None):
        name = _signalName(signal)
        kept = [(s, f) for s, f in self._slots.get(name, []) if slot is not None and f != slot]
        self._slots[name] = kept
        return True

    def emit(self, name, *args):
        threadcheck.check(f"{type(self).__name__}.{name} emitted")
        if self._blocked:
            return
        for signature, slot in list(self._slots.get(name, [])):
            # Overloads such as currentNodeChanged(bool) / (vtkMRMLNode*) get their own argument.
            if signature.endswith("(bool)") and args:
                _call(slot, (bool(args[0]),))
            else:
                _call(slot, args)

    def blockSignals(self, block):
        previous = self._blocked
        object.__setattr__(self, "_blocked", bool(block))
        return previous

    def signalsBlocked(self):
        return self._blocked

    def receivers(self, name):
        return len(self._slots.get(_signalName(name), []))

    # -- properties ---------------------------------------------------------------------------------
    def _setProperty(self, name, value):
        self._properties[name] = value

    def __setattr__(self, name, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        threadcheck.check(f"{type(self).__name__}.{name} set")
        setter = getattr(type(self), "_set_" + name, None)
        if setter is not None:
            setter(self, value)
        else:
            self._setProperty(name, value)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        properties = self.__dict__.get("_properties", {})
        if name in properties:
            return properties[name]
        if name in type(self)._signals():
            return BoundSignal(self, name)
        match = re.match(r"(set|is|has)([A-Z]\w*)$", name)
        if match:
            prop = match.group(2)[0].lower() + match.group(2)[1:]
            if match.group(1) == "set":
                return lambda value=None, *rest: setattr(self, prop, value)
            return lambda: bool(properties.get(prop, False))
        return Inert(f"{type(self).__name__}.{name}")

    def property(self, name):
        return self._properties.get(name)

    def setProperty(self, name, value):
        self._properties[name] = value

    def show(self):
        self.visible = True

    def hide(self):
        self.visible = False

    def setParent(self, parent):
        self._properties["parent"] = parent
        if isinstance(parent, QObject):
            parent._children.append(self)

    def children(self):
        return list(self._children)

    def findChildren(self, klass=None, name=None):
        """Depth-first search of the stub widget tree (layouts included)."""
        found = []
        for child in self._children:
            if (klass is None or isinstance(child, klass)) and (name is None or child.objectName == name):
                found.append(child)
            found.extend(child.findChildren(klass, name))
        return found

    def deleteLater(self):
        pass


class QWidget(QObject):
    DEFAULTS = {"layout": None}

    def setLayout(self, layout):
        self._properties["layout"] = layout
        layout.setParent(self)

    def layout(self):
        return self._properties["layout"]


class QFrame(QWidget):
    pass


class QGroupBox(QWidget):
    DEFAULTS = {"title": "", "checkable": False, "checked": False}


class QLabel(QWidget):
    DEFAULTS = {"text": "", "wordWrap": False}

    def __init__(self, text="", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._properties["text"] = text


class QAbstractButton(QWidget):
    SIGNALS = ("clicked", "toggled", "pressed", "released")
    DEFAULTS = {"text": "", "checkable": False, "checked": False, "icon": None}

    def _set_checked(self, value):
        value = bool(value)
        if not self.checkable or value == self._properties["checked"]:
            return
        self._properties["checked"] = value
        if value:
            self._uncheckSiblings()
        self.emit("toggled", value)

    def _uncheckSiblings(self):
        pass

    def click(self):
        """What a mouse click does: nothing when disabled; toggles a checkable button; clicked()."""
        if not self.enabled:
            return
        self.emit("pressed")
        self.emit("released")
        if self.checkable:
            self.checked = True if isinstance(self, QRadioButton) else not self.checked
        self.emit("clicked", self.checked)

    def animateClick(self, *args):
        self.click()


class QPushButton(QAbstractButton):
    pass


class QToolButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    SIGNALS = ("stateChanged",)
    DEFAULTS = {"checkable": True}


class QRadioButton(QAbstractButton):
    """Auto-exclusive among the radio buttons of the same layout or parent widget, as in Qt."""

    DEFAULTS = {"checkable": True}

    def _uncheckSiblings(self):
        container = self._properties.get("parent")
        if container is None:
            return
        for sibling in container._children:
            if sibling is not self and isinstance(sibling, QRadioButton) and sibling.checked:
                sibling._properties["checked"] = False
                sibling.emit("toggled", False)


class QButtonGroup(QObject):
    SIGNALS = ("buttonClicked", "buttonToggled", "idClicked")

    def addButton(self, button, *args):
        button.setParent(self)


class QComboBox(QWidget):
    SIGNALS = ("currentIndexChanged", "currentTextChanged", "activated")
    DEFAULTS = {"editable": False}

    def __init__(self, *args, **kwargs):
        self.__dict__["_items"] = []
        self.__dict__["_index"] = -1
        super().__init__(*args, **kwargs)

    def addItem(self, *args):
        # addItem(text, data=None) or addItem(icon, text, data=None)
        if args and not isinstance(args[0], str):
            args = args[1:]
        text, data = args[0], (args[1] if len(args) > 1 else None)
        self._items.append((text, data))
        if self._index < 0:
            self._changeIndex(0)  # Qt selects the first item added, with a signal

    def addItems(self, texts):
        for text in texts:
            self.addItem(text)

    def clear(self):
        self._items.clear()
        self._changeIndex(-1)

    def _changeIndex(self, index):
        if index == self._index:
            return
        self.__dict__["_index"] = index
        self.emit("currentIndexChanged", index)
        self.emit("currentTextChanged", self.currentText)

    def setCurrentIndex(self, index):
        index = int(index)
        self._changeIndex(index if -1 <= index < len(self._items) else -1)

    def _set_currentIndex(self, index):
        self.setCurrentIndex(index)

    def setCurrentText(self, text):
        self.setCurrentIndex(self.findText(text))

    def findData(self, data):
        return next((i for i, (_text, d) in enumerate(self._items) if d == data), -1)

    def findText(self, text):
        return next((i for i, (t, _data) in enumerate(self._items) if t == text), -1)

    def itemData(self, index):
        return self._items[index][1] if 0 <= index < len(self._items) else None

    def itemText(self, index):
        return self._items[index][0] if 0 <= index < len(self._items) else ""

    def __getattr__(self, name):
        if name == "currentIndex":
            return self._index
        if name == "currentData":
            return self.itemData(self._index)
        if name == "currentText":
            return self.itemText(self._index)
        if name == "count":
            return len(self._items)
        return super().__getattr__(name)


class _ValueWidget(QWidget):
    """Spin boxes and sliders: a clamped value and valueChanged when it changes."""

    SIGNALS = ("valueChanged",)
    DEFAULTS = {"minimum": 0, "maximum": 99, "value": 0, "singleStep": 1, "suffix": "", "prefix": ""}
    TYPE = int

    def _set_value(self, value):
        value = self.TYPE(min(max(self.TYPE(value), self.minimum), self.maximum))
        if value != self._properties["value"]:
            self._properties["value"] = value
            self.emit("valueChanged", value)

    def _set_minimum(self, value):
        self._properties["minimum"] = self.TYPE(value)
        self.value = self.value

    def _set_maximum(self, value):
        self._properties["maximum"] = self.TYPE(value)
        self.value = self.value

    def setRange(self, minimum, maximum):
        self._properties["minimum"], self._properties["maximum"] = self.TYPE(minimum), self.TYPE(maximum)
        self.value = self.value


class QSpinBox(_ValueWidget):
    pass


class QSlider(_ValueWidget):
    pass


class QDoubleSpinBox(_ValueWidget):
    DEFAULTS = {"maximum": 99.99, "value": 0.0, "decimals": 2}
    TYPE = float

    def _set_value(self, value):
        super()._set_value(round(float(value), self._properties.get("decimals", 2)))


class QLineEdit(QWidget):
    SIGNALS = ("textChanged", "editingFinished", "returnPressed")
    DEFAULTS = {"text": "", "placeholderText": "", "readOnly": False}

    def _set_text(self, value):
        if value != self._properties["text"]:
            self._properties["text"] = value
            self.emit("textChanged", value)


class QLayout(QObject):
    """Layouts only record their items, so that tests can find widgets."""

    def _adopt(self, item):
        if isinstance(item, QObject):
            item.setParent(self)
            # Widgets of a layout belong to the layout's widget (radio-button exclusivity).
        return item

    def addWidget(self, widget, *args):
        self._adopt(widget)

    def addLayout(self, layout, *args):
        self._adopt(layout)

    def addRow(self, *items):
        for item in items:
            if isinstance(item, str):
                item = QLabel(item)
            self._adopt(item)

    def insertWidget(self, index, widget, *args):
        self._adopt(widget)

    def addStretch(self, *args):
        pass

    def addSpacing(self, *args):
        pass


class QHBoxLayout(QLayout):
    pass


class QVBoxLayout(QLayout):
    pass


class QFormLayout(QLayout):
    pass


class QGridLayout(QLayout):
    pass


class QTimer(QObject):
    """Fires from the harness's event loop (SlicerEnvironment.processEvents), never by itself."""

    SIGNALS = ("timeout",)
    DEFAULTS = {"interval": 0, "singleShot": False, "active": False}
    pending = []  # (callable) of QTimer.singleShot, run by the next processEvents
    running = []  # started QTimer instances

    @staticmethod
    def singleShot(_milliseconds, *callback):
        QTimer.pending.append(callback[-1])

    def start(self, interval=None):
        if interval is not None:
            self._properties["interval"] = interval
        self._properties["active"] = True
        if self not in QTimer.running:
            QTimer.running.append(self)

    def stop(self):
        self._properties["active"] = False
        if self in QTimer.running:
            QTimer.running.remove(self)

    def isActive(self):
        return self._properties["active"]

    @classmethod
    def fireDue(cls):
        """One pass of the event loop: run queued single shots, then each running timer once."""
        pending, cls.pending = list(cls.pending), []
        for callback in pending:
            callback()
        for timer in list(cls.running):
            if timer.isActive():
                if timer.singleShot:
                    timer.stop()
                timer.emit("timeout")

    @classmethod
    def reset(cls):
        cls.pending = []
        cls.running = []


class QSettings(QObject):
    """Application settings in a dict shared by every instance (like one settings file)."""

    store = {}

    def value(self, key, default=None, *args):
        return QSettings.store.get(key, default)

    def setValue(self, key, value):
        QSettings.store[key] = value

    def contains(self, key):
        return key in QSettings.store

    def remove(self, key):
        QSettings.store.pop(key, None)

    def allKeys(self):
        return list(QSettings.store)


class QPoint:
    """Integer point: PythonQt converts float arguments to int (the effect base class builds
    QPoint(xy[0], xy[1]) from an interactor's integer event position)."""

    def __init__(self, x=0, y=0):
        self._x, self._y = int(x), int(y)

    def x(self):
        return self._x

    def y(self):
        return self._y


class QVector3D:
    def __init__(self, x=0.0, y=0.0, z=0.0):
        self._v = (float(x), float(y), float(z))

    def x(self):
        return self._v[0]

    def y(self):
        return self._v[1]

    def z(self):
        return self._v[2]


class QIcon:
    def __init__(self, path=None):
        self.path = path

    def isNull(self):
        return self.path is None


def _module(name, namespace):
    """A module whose unknown attributes are inert classes (e.g. qt.QSplitter, ctk.ctkSliderWidget)."""
    module = types.ModuleType(name)
    module.__dict__.update(namespace)

    def __getattr__(attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        klass = type(attribute, (QWidget,), {})
        setattr(module, attribute, klass)
        return klass

    module.__getattr__ = __getattr__
    return module


QT_CLASSES = (QObject, QWidget, QFrame, QGroupBox, QLabel, QAbstractButton, QPushButton, QToolButton, QCheckBox,
              QRadioButton, QButtonGroup, QComboBox, QSpinBox, QDoubleSpinBox, QSlider, QLineEdit, QLayout,
              QHBoxLayout, QVBoxLayout, QFormLayout, QGridLayout, QTimer, QSettings, QPoint, QVector3D, QIcon)


class ctkCollapsibleButton(QAbstractButton):
    SIGNALS = ("contentsCollapsed",)
    DEFAULTS = {"collapsed": False, "checkable": True, "checked": True}


class ctkPathLineEdit(QWidget):
    SIGNALS = ("currentPathChanged",)
    DEFAULTS = {"currentPath": "", "filters": 0, "nameFilters": []}


def makeQtModule():
    namespace = {klass.__name__: klass for klass in QT_CLASSES}
    namespace["Qt"] = Inert("qt.Qt")
    namespace["QApplication"] = Inert("qt.QApplication")
    namespace["QMessageBox"] = Inert("qt.QMessageBox")
    namespace["QCursor"] = Inert("qt.QCursor")
    namespace["QSizePolicy"] = Inert("qt.QSizePolicy")
    return _module("qt", namespace)


def makeCtkModule():
    return _module("ctk", {"ctkCollapsibleButton": ctkCollapsibleButton, "ctkPathLineEdit": ctkPathLineEdit})
