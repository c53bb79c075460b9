import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from bsbench.training.model import ImageClassifier


def forwards_per_training_step(train_acc_eval_forward: bool) -> list[bool]:
    model = ImageClassifier("mobilenet_v3_small", num_classes=10, train_acc_eval_forward=train_acc_eval_forward)
    modes = []
    model.net.register_forward_hook(lambda module, args, out: modes.append(module.training))
    data = DataLoader(TensorDataset(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))), batch_size=4)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, data)
    return modes


def test_reference_extra_eval_forward_is_off_by_default():
    assert forwards_per_training_step(False) == [True]


def test_reference_extra_eval_forward_runs_in_eval_mode_when_asked():
    assert forwards_per_training_step(True) == [True, False]


def test_model_is_torchvisions_network_with_a_fresh_head():
    model = ImageClassifier("mobilenet_v3_large", num_classes=10)
    assert model.net.classifier[-1].out_features == 10
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_every_architecture_of_the_b3_models_preset_trains_two_real_steps(tmp_path):
    from bsbench.job.run import attempt
    from conftest import composed, job_config

    archs = composed("experiment=b3_models").hydra.sweeper.params["model.arch"].split(",")
    assert {"mobilenet_v3_large", "resnet50", "efficientnet_b0", "convnext_tiny", "vit_b_16"} <= set(archs)
    for arch in archs:  # at 32 px: ViT-B/16 only with its image_size given to the constructor
        result = attempt(job_config(tmp_path, f"model.arch={arch}", "mode=throughput", "batch_size=4",
                                    "timing.warmup_steps=1", "trainer.max_steps=2"))
        assert result["status"] == "ok", (arch, result.get("error"))
        assert (result["model"], result["train_samples"], result["timed_steps"]) == (arch, 8, 1)
        assert result["train_flops_per_sample"] > 0  # counted for the size it ran at
