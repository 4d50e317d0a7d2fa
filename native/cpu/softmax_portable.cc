// softmax kernels, portable (issue 8; being written)
