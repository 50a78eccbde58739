// Shows the text a MotionDirector node reports (its "ui" -> "text": where Save LoRA wrote the file,
// where Train saved the run) in a read-only box on the node, once the node has run.
import { app } from "../../scripts/app.js";

const REPORT = "md_report";

app.registerExtension({
  name: "MotionDirector.Report",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith("MotionDirector")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text;
      if (!text || !text.length) return;
      let widget = this.widgets?.find((w) => w.name === REPORT);
      if (!widget) {
        const box = document.createElement("textarea");
        box.readOnly = true;
        box.rows = 3;
        box.style.cssText = "width:100%;resize:none;font-size:11px;opacity:0.85;";
        widget = this.addDOMWidget(REPORT, "textarea", box, {
          serialize: false,
          getValue: () => box.value,
          setValue: (v) => { box.value = v; },
          getMinHeight: () => 60,
        });
        widget.serialize = false;
        const [w, h] = this.size;
        this.setSize([w, Math.max(h, this.computeSize()[1])]);
      }
      widget.value = (Array.isArray(text) ? text : [text]).join("\n");
      this.setDirtyCanvas(true, true);
    };
  },
});
