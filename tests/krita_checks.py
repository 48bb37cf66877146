"""Runs inside Krita (`kritarunner -s krita_checks CONFIG.json`): the plug-in on real Krita documents.

tests/test_krita.py writes the documents and CONFIG.json, starts kritarunner and asserts on the JSON
report this script writes: everything here is read through Krita's own API (node names, composite ops,
bounds, pixel bytes, the document's projection). kritarunner exits 0 whatever happens, so an exception
is reported in the JSON too. Krita's Python has no numpy: pixels are compared as bytes.
"""

import hashlib
import json
import time
import traceback


def __main__(args):
    config = json.load(open(args[0]))
    report = {}
    try:
        checks(config, report)
    except Exception:  # noqa: BLE001 - the test prints it
        report["exception"] = traceback.format_exc()
    with open(config["report"], "w") as out:
        json.dump(report, out, indent=1)


def checks(config, report):
    from krita import Krita

    import lasagna_krita
    from lasagna_krita.docker import LasagnaDocker

    krita = Krita.instance()
    exe, scene, prompt = config["executable"], config["scene"], "light from the left"

    blend = krita.openDocument(config["blend_modes"])
    report["psd_import_modes"] = {n.name(): n.blendingMode() for n in blend.topLevelNodes()}
    blend.close()

    # The whole document as the base.
    doc = krita.openDocument(scene)
    before, projection = snapshot(doc), doc.pixelData(0, 0, doc.width(), doc.height())
    events = []
    nodes = lasagna_krita.run_on_document(doc, "shade", prompt, steps=3, executable=exe, on_progress=events.append)
    report["whole"] = {
        "size": [doc.width(), doc.height()],
        "new": [describe(n) for n in nodes],
        "top_level": [n.name() for n in doc.topLevelNodes()],
        "group_pass_through": nodes[0].parentNode().passThroughMode(),
        "originals_after": snapshot(doc, only=set(before)),
        "originals_before": before,
        "projection_changed": not bytes_equal(doc.pixelData(0, 0, doc.width(), doc.height()), projection),
        "projection_as_without_group": bytes_equal(doc.pixelData(0, 0, doc.width(), doc.height()),
                                                   without_group(krita, scene, nodes)),
        "progress_steps": [e.step for e in events if e.kind == "progress"],
        "final": [e.kind for e in events if e.final],
    }

    # One layer as the base: the group above it, clipped (alpha inheritance), neutral outside it.
    doc = krita.openDocument(scene)
    hero = doc.nodeByName("Hero")
    before, projection = snapshot(doc), doc.pixelData(0, 0, doc.width(), doc.height())
    alpha = bytes(hero.pixelData(0, 0, doc.width(), doc.height()))[3::4]
    nodes = lasagna_krita.run_on_document(doc, "shade", prompt, steps=40, executable=exe, base_layer=hero)
    after, projection = bytes(doc.pixelData(0, 0, doc.width(), doc.height())), bytes(projection)
    group = nodes[0].parentNode()
    siblings = [n.name() for n in group.parentNode().childNodes()]
    report["layer"] = {
        "new": [describe(n) for n in nodes],
        "group": group.name(),
        "group_just_above_hero": siblings.index(group.name()) == siblings.index("Hero") + 1,
        "originals_after": snapshot(doc, only=set(before)),
        "originals_before": before,
        "changed_outside_hero": changed(after, projection, alpha, lambda a: a == 0),
        "changed_inside_hero": changed(after, projection, alpha, lambda a: a == 255),
        "group_parent": group.parentNode().name(),
        "hero_pixels": sum(1 for a in alpha if a == 255),
    }
    light = nodes[1]
    light.setPixelData(b"\xff" * (4 * doc.width() * doc.height()), 0, 0, doc.width(), doc.height())
    doc.refreshProjection()
    doc.waitForDone()
    white = bytes(doc.pixelData(0, 0, doc.width(), doc.height()))
    report["layer"]["white_light_outside_hero"] = changed(white, projection, alpha, lambda a: a == 0)
    report["layer"]["white_light_inside_hero"] = changed(white, projection, alpha, lambda a: a == 255)

    # A prompt the built-in prior can't read: the CLI's line and exit code, nothing added.
    doc = krita.openDocument(scene)
    count = len(all_nodes(doc.rootNode()))
    try:
        lasagna_krita.run_on_document(doc, "shade", "make it nice", steps=2, executable=exe)
        report["refused"] = {"raised": False}
    except lasagna_krita.LasagnaRunError as exc:
        report["refused"] = {"raised": True, "message": str(exc), "exit_code": exc.exit_code,
                             "nodes_unchanged": len(all_nodes(doc.rootNode())) == count}

    # Documents the plug-in can't hand to Lasagna are refused before anything runs.
    deep = krita.createDocument(16, 16, "deep", "RGBA", "U16", "", 72.0)
    masked = krita.openDocument(scene)
    mask = masked.createNode("Mask", "transparencymask")
    masked.nodeByName("Backdrop").addChildNode(mask, None)
    report["unsupported"] = []
    for document, base in ((deep, None), (masked, mask)):
        try:
            lasagna_krita.run_on_document(document, "shade", prompt, executable=exe, base_layer=base)
            report["unsupported"].append(None)
        except Exception as exc:  # noqa: BLE001 - the test checks which
            report["unsupported"].append([type(exc).__name__, str(exc)])

    # The docker: templates from `lasagna templates --json`, a run in the background, and Cancel.
    docker = LasagnaDocker()
    docker.executable.setText(exe)
    docker.load_templates()
    wait(lambda: docker.template.count() == config["templates"], 60)
    report["docker_templates"] = [docker.template.itemText(i) for i in range(docker.template.count())]
    docker.template.setEditText("shade")
    docker.prompt.setText(prompt)
    docker.steps.setValue(3)
    doc = krita.openDocument(scene)
    count = len(all_nodes(doc.rootNode()))
    docker.start(doc)
    report["docker_busy_while_running"] = docker.cancel_button.isEnabled() and not docker.run_button.isEnabled()
    wait(lambda: docker.run_button.isEnabled(), 300)
    report["docker_run"] = {"status": docker.status.text(), "added": len(all_nodes(doc.rootNode())) - count,
                            "bar": [docker.bar.value(), docker.bar.maximum()]}

    docker.steps.setValue(5000)
    doc = krita.openDocument(scene)
    count = len(all_nodes(doc.rootNode()))
    docker.start(doc)
    folder = docker.job.folder
    wait(lambda: docker.bar.value() > 0, 300)
    report["docker_progress_before_cancel"] = [docker.bar.value(), docker.bar.maximum(), docker.status.text()]
    started = time.monotonic()
    docker.cancel()
    wait(lambda: docker.run_button.isEnabled(), 60)
    report["docker_cancel"] = {"status": docker.status.text(), "added": len(all_nodes(doc.rootNode())) - count,
                               "seconds": round(time.monotonic() - started, 2), "temporaries_left": folder.exists()}


def wait(condition, seconds):
    """Run Qt's event loop (QProcess signals) until `condition()` holds or `seconds` pass."""
    from PyQt5.QtCore import QCoreApplication, QEventLoop

    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        time.sleep(0.02)


def all_nodes(parent):
    found = []
    for node in parent.childNodes():
        found += [node] + all_nodes(node)
    return found


def snapshot(doc, only=None):
    """Every layer's name, kind, mode, opacity, visibility, alpha inheritance and a hash of its pixels."""
    width, height = doc.width(), doc.height()
    shots = {}
    for node in all_nodes(doc.rootNode()):
        key = node.uniqueId().toString()
        if only is None or key in only:
            shots[key] = [node.name(), node.type(), node.blendingMode(), node.opacity(), node.visible(), node.inheritAlpha(),
                          hashlib.sha256(bytes(node.pixelData(0, 0, width, height))).hexdigest()]
    return shots


def describe(node):
    box = node.bounds()
    return {"name": node.name(), "type": node.type(), "blending": node.blendingMode(), "opacity": node.opacity(),
            "bounds": [box.x(), box.y(), box.width(), box.height()], "inherit_alpha": node.inheritAlpha(),
            "parent": node.parentNode().name()}


def without_group(krita, scene, nodes):
    """The projection of the same layers added straight to the root, no group: a pass-through group must
    give exactly this."""
    doc = krita.openDocument(scene)
    width, height = doc.width(), doc.height()
    for source in nodes:
        node = doc.createNode(source.name(), "paintlayer")
        doc.rootNode().addChildNode(node, None)
        node.setPixelData(source.pixelData(0, 0, width, height), 0, 0, width, height)
        node.setBlendingMode(source.blendingMode())
        node.setOpacity(source.opacity())
    doc.refreshProjection()
    doc.waitForDone()
    data = doc.pixelData(0, 0, width, height)
    doc.close()
    return data


def bytes_equal(a, b):
    return bytes(a) == bytes(b)


def changed(after, before, alpha, where):
    """How many pixels whose alpha satisfies `where` differ between two BGRA projections."""
    return sum(1 for i, a in enumerate(alpha) if where(a) and after[4 * i:4 * i + 4] != before[4 * i:4 * i + 4])
