"""The splits: built-in data in memory, image folders and user Datasets streamed.

- `loading`: `load_splits` (train / validation / test fixed by seed), `Splits`
- `split`: the one `Split` interface every loop reads batches through; image decoding
- `imagefolder`, `datasets`: a folder of images, a user's torch Datasets
- `preprocess`: `Preprocessing` (size, mean, std, interpolation, crop), resolved once a sweep
"""
