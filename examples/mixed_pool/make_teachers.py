# make_teachers.py: three teachers from three places, saved as files
import pickle
from pathlib import Path

import torch
from torch import nn
from sklearn.ensemble import RandomForestClassifier
import mtkd

torch.manual_seed(0)
data = mtkd.load_dataset("digits", shape="flat")  # the same split `mtkd run` uses (seed 0)
loader = mtkd.BatchLoader(data.train, batch_size=64)
Path("teachers").mkdir(exist_ok=True)

# 1. PyTorch: a built-in MLP, saved as a plain state dict
mlp = mtkd.build_model("mlp", (64,), 10, hidden=[128])
mtkd.train(mlp, loader, steps=1000, lr=3e-3, progress=False)
torch.save(mlp.state_dict(), "teachers/mlp.pt")

# 2. ONNX: any framework that exports ONNX can teach; here a small CNN exported from PyTorch
cnn = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 10))
mtkd.train(cnn, loader, steps=1000, lr=3e-3, progress=False)
torch.onnx.export(cnn.eval(), (data.train.x[:1],), "teachers/cnn.onnx", dynamo=False,
                  input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})

# 3. scikit-learn: a random forest (anything with predict_proba), pickled
forest = RandomForestClassifier(n_estimators=100, random_state=0).fit(data.train.x.numpy(), data.train.y.numpy())
with open("teachers/forest.pkl", "wb") as handle:
    pickle.dump(forest, handle)
