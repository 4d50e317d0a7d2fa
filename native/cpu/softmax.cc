// softmax driver (issue 8; being written)
