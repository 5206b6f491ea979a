def test_tiny_models_run(tiny_model):
    import torch

    model, tok = tiny_model
    ids = torch.tensor([tok("hello world")["input_ids"]])
    out = model(ids)
    assert out.logits.shape == (1, ids.shape[1], len(tok))
