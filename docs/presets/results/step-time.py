import sys, time, torch
torch.set_num_threads(1)
from trainables.models.gpt import GPT, model_config
name, B = sys.argv[1], int(sys.argv[2]); T=64
m = GPT(model_config(name, block_size=T, vocab_size=256))
opt = torch.optim.AdamW(m.parameters(), lr=6e-3, weight_decay=0.3, betas=(0.9,0.95))
x = torch.randint(0,256,(B,T)); y = torch.randint(0,256,(B,T))
def step():
    out = m(x, y); loss = out[1] if isinstance(out, tuple) else out
    opt.zero_grad(set_to_none=True); loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step()
for _ in range(10): step()
t=time.perf_counter()
for _ in range(150): step()
print(name, B, "%.1f ms/step" % ((time.perf_counter()-t)/150*1000))
